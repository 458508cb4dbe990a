"""Checks of estimator and server parameters, with one wording for every refusal.

Every check raises :class:`~deepdist.errors.ConfigurationError` naming the parameter, what it
accepts and what it got, and treats ``True``/``False`` as booleans, never as the integers 1 and 0
(``epochs=True`` is a mistake, not one epoch).

    >>> from deepdist.validation import check_int, check_real, check_choice
    >>> check_int("epochs", 5)
    5
    >>> check_real("alpha", 0.1, above=0)
    0.1
    >>> check_choice("descent", "add", ("add", "adagrad"))
    'add'
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import ConfigurationError

__all__ = ["check_bool", "check_callable", "check_callbacks", "check_choice", "check_int", "check_mapping",
           "check_real"]


def _refuse(name: str, accepted: str, value):
    raise ConfigurationError(f"{name} must be {accepted}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = 1, maximum: int | None = None, *,
              none: bool = False):
    """``value`` if it is an integer in [minimum, maximum] (or None when ``none``); else refuse it."""
    if value is None and none:
        return value
    ok = _is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = (f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}" if maximum is not None else "")
        _refuse(name, ("None or " if none else "") + f"an integer {bounds}".rstrip(), value)
    return value


def check_real(name: str, value, *, minimum: float | None = None, above: float | None = None,
               maximum: float | None = None, below: float | None = None, none: bool = False):
    """``value`` if it is a finite real number within the bounds (``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive), or None when ``none``; else refuse it."""
    if value is None and none:
        return value
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (minimum is None or value >= minimum) and (above is None or value > above)
          and (maximum is None or value <= maximum) and (below is None or value < below))
    if not ok:
        low = f"[{minimum}" if minimum is not None else f"({above}" if above is not None else None
        high = f"{maximum}]" if maximum is not None else f"{below})" if below is not None else None
        bounds = (f" in {low}, {high}" if low and high else f" >= {minimum}" if minimum is not None
                  else f" > {above}" if above is not None else f" <= {maximum}" if maximum is not None
                  else f" < {below}" if below is not None else "")
        _refuse(name, ("None or " if none else "") + "a finite number" + bounds, value)
    return value


def check_choice(name: str, value, choices):
    """``value`` if it is one of ``choices``; else refuse it, listing them."""
    if isinstance(value, bool) or value not in tuple(choices):
        _refuse(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_bool(name: str, value, *, none: bool = False):
    """``value`` if it is True or False (or None when ``none``); numpy booleans count."""
    if (value is None and none) or isinstance(value, (bool, np.bool_)):
        return value
    _refuse(name, ("None, " if none else "") + "True or False", value)


def check_callable(name: str, value, *, none: bool = True):
    """``value`` if it is callable (or None when ``none``)."""
    if (value is None and none) or callable(value):
        return value
    raise ConfigurationError(f"{name} must be {'None or ' if none else ''}callable, got {type(value).__name__}")


def check_callbacks(value, *, hooks: tuple = ()) -> tuple:
    """``callbacks`` as a tuple: a list or tuple whose items are callable, or objects with one of
    ``hooks`` (e.g. gensim's ``on_epoch_end``); one callable alone is taken as a list of one."""
    if value is None:
        return ()
    if callable(value) and not isinstance(value, (list, tuple)):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"callbacks must be a list of callables f(estimator, record), "
                                 f"got {type(value).__name__}")
    for i, callback in enumerate(value):
        if not (callable(callback) or any(hasattr(callback, hook) for hook in hooks)):
            accepted = "callable f(estimator, record)" + (f" or have {' / '.join(hooks)}" if hooks else "")
            raise ConfigurationError(f"callbacks[{i}] must be {accepted}, got {type(callback).__name__}")
    return tuple(value)


def check_mapping(name: str, value, *, none: bool = True) -> dict:
    """``value`` as a dict (None gives an empty one when ``none``)."""
    if value is None and none:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{name} must be {'None or ' if none else ''}a dict, got {type(value).__name__}")
    return value


def check_one_server(options: dict, family: str, why: str) -> None:
    """Refuse ``server_options={"servers": N > 1}`` for a family whose driver needs the whole model."""
    servers = options.get("servers", 1)
    if servers != 1:
        raise ConfigurationError(f"{family} runs on one model server (servers=1), got servers={servers!r}: {why}")
