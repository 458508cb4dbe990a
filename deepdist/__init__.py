"""deepdist: a Spark-native parameter server for Downpour SGD and distributed topic models.

    from deepdist import DeepDist
    with DeepDist(model) as dd:
        dd.train(rdd, gradient, descent, epochs=3)
"""

from .checkpoint import Checkpointer
from .client import ModelClient
from .config import ServerConfig
from .core import DeepDist, TrainingFailedError
from .estimator import Estimator
from .errors import (AuthenticationError, ConfigurationError, DeepDistError, DescentFailedError,
                     InvalidUpdateError, ModelShapeError, NotFittedError, ServerError,
                     ServerUnreachableError, ShardError, SupersededAttemptError, WireFormatError)
from .optim import SGD, AdaGrad
from .optim_adaptive import Adam, AdamW, Momentum
from .descent_checkpoint import DescentCheckpointer
from .params import ParamAdapter
from .sparse import SparseRows
from .worker import TaskChannel, report

__version__ = "0.1.0"

# The model families import gensim and numba; load them on first use so that
# `import deepdist` (in every Spark task) stays cheap.
_LAZY = {
    "DistributedWord2Vec": "deepdist.word2vec",
    "DNT": "deepdist.dnt.estimator",
    "DNTModel": "deepdist.dnt.model",
    "DNTTimeline": "deepdist.dnt.timeline",
    "GibbsLDA": "deepdist.lda.gibbs",
    "GibbsLDAModel": "deepdist.lda.gibbs_model",
    "OnlineLDA": "deepdist.lda.online",
    "build_dictionary": "deepdist.lda.dictionary",
    "build_vocabulary": "deepdist.vocabulary",
    "Vocabulary": "deepdist.vocabulary",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepdist' has no attribute {name!r}")

__all__ = [
    "AdaGrad", "Adam", "AdamW", "DescentCheckpointer", "Momentum", "AuthenticationError", "Checkpointer", "ConfigurationError", "DeepDist", "DeepDistError",
    "DNT", "DNTModel", "DNTTimeline", "DescentFailedError", "DistributedWord2Vec", "Estimator", "GibbsLDA", "GibbsLDAModel", "InvalidUpdateError",
    "ModelClient", "ModelShapeError", "NotFittedError", "OnlineLDA", "ParamAdapter", "SGD", "ServerConfig",
    "ServerError", "ServerUnreachableError", "ShardError", "SparseRows", "SupersededAttemptError", "TaskChannel",
    "TrainingFailedError", "Vocabulary", "WireFormatError", "build_dictionary", "build_vocabulary", "report",
]
