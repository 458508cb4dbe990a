"""Deprecated: moved to :mod:`deepdist.word2vec.descent`; this alias goes in the next release."""

import warnings

from deepdist.word2vec.descent import *  # noqa: F401,F403
from deepdist.word2vec.descent import __all__  # noqa: F401

warnings.warn("deepdist.word2vec_descent moved to deepdist.word2vec.descent; import it from there", DeprecationWarning, stacklevel=2)
