"""Which numpy arrays of a model are its parameters.

A model is either a dict of named numpy arrays, or any object plus an adapter
naming the arrays that train (for a gensim ``Word2Vec``: ``wv.vectors`` and
``syn1neg``).  Everything else about the object is static: it reaches the
executors once, by Spark broadcast, with the parameter arrays taken out.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigurationError, ModelShapeError

#: The dtypes that may travel on the wire and be trained.
ALLOWED_DTYPES = ("float32", "float64", "int32", "int64")


@dataclass(frozen=True)
class ParamSpec:
    """Name, shape and dtype of one parameter array."""

    name: str
    shape: tuple
    dtype: np.dtype

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(self.dtype, np.integer)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class ModelSpec(dict):
    """``{name: ParamSpec}`` of a model; the reference every update is checked against."""

    @classmethod
    def of(cls, params: dict) -> "ModelSpec":
        spec = cls()
        for name, array in params.items():
            if not isinstance(array, np.ndarray):
                raise ConfigurationError(
                    f"parameter {name!r} must be a numpy array, got {type(array).__name__}"
                )
            if array.dtype.name not in ALLOWED_DTYPES:
                raise ConfigurationError(
                    f"parameter {name!r} has dtype {array.dtype}; allowed: {', '.join(ALLOWED_DTYPES)}"
                )
            if array.ndim == 0:
                raise ConfigurationError(f"parameter {name!r} must have at least one dimension")
            spec[name] = ParamSpec(name, tuple(array.shape), array.dtype)
        if not spec:
            raise ConfigurationError("the model has no parameter arrays")
        return spec

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.values())

    def check(self, params: dict) -> None:
        """Raise :class:`ModelShapeError` unless ``params`` still fit this spec."""
        for name, want in self.items():
            got = params.get(name)
            if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
                desc = "missing" if got is None else f"{getattr(got, 'shape', '?')} {getattr(got, 'dtype', '?')}"
                raise ModelShapeError(
                    f"parameter {name!r} should be {want.shape} {want.dtype}, but is {desc}; "
                    "descent must update parameters in place or keep their shape and dtype"
                )


class ParamAdapter:
    """Names the parameter arrays of a model object by attribute path.

    ``ParamAdapter(["wv.vectors", "syn1neg"])`` reads ``model.wv.vectors`` and
    ``model.syn1neg``.  A dict model needs no adapter: its keys are the names.

    Example::

        >>> import numpy as np
        >>> from deepdist import ParamAdapter
        >>> class Linear: pass
        >>> m = Linear(); m.coef = np.zeros(3)
        >>> ParamAdapter(["coef"]).get(m)["coef"]
        array([0., 0., 0.])
    """

    def __init__(self, names):
        names = list(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigurationError(f"ParamAdapter needs attribute paths (strings), got {names!r}")
        self.names = names

    def get(self, model) -> dict:
        return {name: _getattr_path(model, name) for name in self.names}

    def set(self, model, params: dict) -> None:
        for name, array in params.items():
            _setattr_path(model, name, array)

    @contextlib.contextmanager
    def stripped(self, model):
        """The model with its parameter arrays swapped for empty ones, for a broadcast.

        The arrays are restored on exit, so the driver's model is untouched.
        """
        params = self.get(model)
        try:
            self.set(model, {n: np.empty((0,), a.dtype) for n, a in params.items()})
            yield model
        finally:
            self.set(model, params)


class DictAdapter(ParamAdapter):
    """The adapter of a dict model: every value is a parameter."""

    def __init__(self):
        self.names = None

    def get(self, model) -> dict:
        return model

    def set(self, model, params: dict) -> None:
        model.update(params)

    @contextlib.contextmanager
    def stripped(self, model):
        yield {}


def adapter_for(model, params=None) -> ParamAdapter:
    """The adapter for ``model``: given, built from attribute names, or the dict one."""
    if isinstance(params, ParamAdapter):
        return params
    if params is not None:
        return ParamAdapter(params)
    if isinstance(model, dict):
        return DictAdapter()
    raise ConfigurationError(
        f"a {type(model).__name__} model needs params=[...] naming its parameter arrays "
        "(attribute paths such as 'wv.vectors'), or a ParamAdapter"
    )


def allocate(spec: ModelSpec) -> dict:
    """Fresh zero arrays matching ``spec`` (an executor's local copy)."""
    return {name: np.zeros(p.shape, p.dtype) for name, p in spec.items()}


def _getattr_path(obj, path: str):
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _setattr_path(obj, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if isinstance(obj, dict):
        obj[last] = value
    else:
        setattr(obj, last, value)


def get_param(model, name: str) -> np.ndarray:
    """The parameter ``name`` of a dict model or (by attribute path) of an object model."""
    return model[name] if isinstance(model, dict) else _getattr_path(model, name)
