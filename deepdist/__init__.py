"""deepdist: a Spark-native parameter server for Downpour SGD and distributed topic models.

    from deepdist import DeepDist
    with DeepDist(model) as dd:
        dd.train(rdd, gradient, descent, epochs=3)
"""

from .checkpoint import Checkpointer
from .client import ModelClient
from .config import ServerConfig
from .core import DeepDist, TrainingFailedError
from .errors import (AuthenticationError, ConfigurationError, DeepDistError, DescentFailedError,
                     InvalidUpdateError, ModelShapeError, NotFittedError, ServerError,
                     ServerUnreachableError, SupersededAttemptError, WireFormatError)
from .optim import SGD, AdaGrad
from .params import ParamAdapter
from .sparse import SparseRows
from .worker import TaskChannel, report

__version__ = "0.1.0"

__all__ = [
    "AdaGrad", "AuthenticationError", "Checkpointer", "ConfigurationError", "DeepDist",
    "DeepDistError", "DescentFailedError", "InvalidUpdateError", "ModelClient", "ModelShapeError",
    "NotFittedError", "ParamAdapter", "SGD", "ServerConfig", "ServerError", "ServerUnreachableError",
    "SparseRows", "SupersededAttemptError", "TaskChannel", "TrainingFailedError", "WireFormatError", "report",
]
