"""Deprecated: moved to :mod:`deepdist.datasets.wikipedia`; this alias goes in the next release."""

import warnings

from deepdist.datasets.wikipedia import *  # noqa: F401,F403
from deepdist.datasets.wikipedia import __all__  # noqa: F401

warnings.warn("deepdist.wikipedia moved to deepdist.datasets.wikipedia; import it from there", DeprecationWarning, stacklevel=2)
