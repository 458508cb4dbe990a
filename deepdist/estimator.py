"""The contract every deepdist estimator keeps (scikit-learn's, with Spark's handles).

* **Parameters** are keyword-only, stored by ``__init__`` as given, under their own names, and
  checked by ``fit`` (:mod:`deepdist.validation`); :meth:`Estimator.get_params`,
  :meth:`~Estimator.set_params` and ``repr`` work from ``__init__``'s signature.
* **One name per concept** across families: ``epochs`` (passes over the data), ``seed``
  (default 0: every fit is reproducible unless asked otherwise), ``spark`` (a SparkSession or
  SparkContext; the data's own context when the data is an RDD), ``server_options`` (keyword
  arguments for :class:`deepdist.DeepDist`), ``progress``, ``callbacks``.
* ``fit(data, ...)`` returns the estimator. The fitted model is ``model_`` (a gensim object where
  one exists, with gensim's ``save``/``load``; a deepdist class with ``save``/``load`` otherwise).
* ``history_``: one dict per record (a pass over the data, or a Spark job of several), each with
  ``epoch`` (passes over the data complete), ``seconds`` (of this record) and ``elapsed`` (since
  ``fit`` began), plus the family's own measurements; ``n_iter_``: passes over the data done.
* ``callbacks=[f(estimator, record)]``: called on the driver after each record is appended,
  with the estimator (its ``model_`` is usable then) and the record, which a callback may extend.
* Renamed parameters live one release as aliases that warn (:attr:`Estimator._renamed`).

    >>> from deepdist.estimator import Estimator
    >>> class Mean(Estimator):
    ...     def __init__(self, *, epochs=1, seed=0, callbacks=()):
    ...         self.epochs, self.seed, self.callbacks = epochs, seed, callbacks
    ...     def fit(self, data):
    ...         self._begin_fit()
    ...         for epoch in range(1, self.epochs + 1):
    ...             self.model_ = sum(data) / len(data)
    ...             self._record({"epoch": epoch, "seconds": 0.0})
    ...         return self
    >>> Mean(epochs=2).fit([1, 2, 3]).model_, Mean(epochs=2).fit([1]).n_iter_
    (2.0, 2)
    >>> Mean(epochs=3)
    Mean(epochs=3)
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings

from .errors import NotFittedError
from .validation import check_callbacks

__all__ = ["Estimator"]

log = logging.getLogger(__name__)


class Estimator:
    """Base class of deepdist's estimators: the contract above, in one place."""

    #: old parameter name -> current name, accepted by ``__init__`` and ``set_params`` with a warning
    _renamed: dict = {}
    #: old attribute name -> current one (e.g. ``epochs_`` -> ``history_``), read with a warning
    _renamed_attributes: dict = {}
    #: hooks a non-callable callback object may have instead (gensim's ``on_epoch_end``)
    _callback_hooks: tuple = ()

    # -- parameters -------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def get_params(self, deep: bool = False) -> dict:
        """The parameters, as given (scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "Estimator":
        """Set parameters by name; return the estimator (scikit-learn's ``set_params``)."""
        names = set(self._param_names())
        for name, value in self._take_renamed(params).items():
            if name not in names:
                raise TypeError(f"{type(self).__name__} has no parameter {name!r}; "
                                f"its parameters: {', '.join(sorted(names))}")
            setattr(self, name, value)
        return self

    def _take_renamed(self, params: dict) -> dict:
        """``params`` with renamed parameters under their current names, each warned about once."""
        out = {}
        for name, value in params.items():
            current = self._renamed.get(name)
            if current is not None:
                warnings.warn(f"{type(self).__name__}({name}=...) is renamed {current}=...; the old name "
                              "goes in the next release", DeprecationWarning, stacklevel=3)
                if current in params:
                    raise TypeError(f"{type(self).__name__} got both {name}= and its new name {current}=")
                name = current
            out[name] = value
        return out

    def _init_renamed(self, renamed: dict) -> None:
        """For ``__init__(..., **renamed)``: set renamed parameters given under their old names,
        refuse any other unexpected keyword as Python would."""
        defaults = inspect.signature(type(self).__init__).parameters
        for name in renamed:
            if name not in self._renamed:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {name!r}")
            current = self._renamed[name]
            given = getattr(self, current, defaults[current].default)
            if given is not defaults[current].default:
                raise TypeError(f"{type(self).__name__} got both {name}= and its new name {current}=")
        for name, value in self._take_renamed(renamed).items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        signature = inspect.signature(type(self).__init__)
        shown = []
        for name in self._param_names():
            value = getattr(self, name, None)
            default = signature.parameters[name].default
            try:
                same = value is default or value == default
                same = bool(same)
            except Exception:  # arrays and other values without a plain truth value
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- fitted state ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if "model_" not in self.__dict__:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(...) first")

    def __getattr__(self, name: str):
        # only reached when normal lookup fails
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(self)
        prop = getattr(cls, name, None)
        if isinstance(prop, property):
            # the property itself raised an AttributeError (a NotFittedError, say): Python then
            # asks here, and a plain "no attribute" would hide its message; let it raise again
            return prop.__get__(self, cls)
        if name in cls._renamed:
            warnings.warn(f"{cls.__name__}.{name} is renamed {cls._renamed[name]}", DeprecationWarning,
                          stacklevel=2)
            return getattr(self, cls._renamed[name])
        if name in cls._renamed_attributes:
            warnings.warn(f"{cls.__name__}.{name} is renamed {cls._renamed_attributes[name]}",
                          DeprecationWarning, stacklevel=2)
            return getattr(self, cls._renamed_attributes[name])
        if name == "model_":
            raise NotFittedError(f"this {cls.__name__} is not fitted yet; call fit(...) first")
        model = self.__dict__.get("model_")
        if model is not None and not name.startswith("_") and hasattr(model, name):
            # fit() used to return the model: `model = est.fit(data); model.show_topics()` keeps
            # working for one release
            warnings.warn(f"{cls.__name__}.fit() returns the estimator; the fitted model is its model_: "
                          f"use .model_.{name}", DeprecationWarning, stacklevel=2)
            return getattr(model, name)
        raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

    # -- history and callbacks -----------------------------------------------------------------
    def _begin_fit(self) -> None:
        """Start a fit's history (call at the top of ``fit``)."""
        self.history_ = []
        self.n_iter_ = 0
        self._fit_started = time.perf_counter()
        self._callbacks = check_callbacks(getattr(self, "callbacks", ()), hooks=self._callback_hooks)

    def _record(self, record: dict) -> dict:
        """Append ``record`` to ``history_`` (setting ``elapsed``), advance ``n_iter_`` to its
        ``epoch`` and call the callbacks; return the record."""
        record.setdefault("elapsed", time.perf_counter() - getattr(self, "_fit_started", time.perf_counter()))
        self.history_.append(record)
        self.n_iter_ = int(record.get("epoch", self.n_iter_))
        for callback in getattr(self, "_callbacks", ()):
            self._call_back(callback, record)
        return record

    def _call_back(self, callback, record: dict) -> None:
        callback(self, record)
