"""Deprecated: moved to :mod:`deepdist.word2vec.evaluate`; this alias goes in the next release."""

import warnings

from deepdist.word2vec.evaluate import *  # noqa: F401,F403
from deepdist.word2vec.evaluate import __all__  # noqa: F401

warnings.warn("deepdist.word2vec_eval moved to deepdist.word2vec.evaluate; import it from there", DeprecationWarning, stacklevel=2)
