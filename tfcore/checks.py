"""Argument checks shared by tfcore, models, train and bench: one module, one wording.

Each function checks ONE value, returns it normalised (an `int`, a `float`, ...) and
otherwise raises `ArgumentError` (a `ValueError`) naming the argument and quoting the
value:

    check_int(0, "batch_size", low=1)      -> ValueError: batch_size must be a positive
                                              integer, got 0
    check_real(-1.0, "--eps", low=0)       -> ValueError: --eps must be a finite number
                                              >= 0, got -1.0
    check_choice("x", "mode", ("a", "b"))  -> ValueError: mode must be one of a, b,
                                              got 'x'

The rule of the project: a function checks the arguments it owns, once; a caller that
only passes an argument on does not check it again. The binaries' options are checked
by `tfcore.training.options` with these same functions, under the flag's name
(`--eps`), when a run's configuration is built; rules that span several options live in
each configuration's `validate`.

Bools are not integers here (`check_int(True, ...)` fails), NumPy integers and floats
are accepted, and NaN / Inf are never "finite numbers".
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional

import numpy as np

__all__ = ["ArgumentError", "check_bool", "check_choice", "check_int", "check_name", "check_real",
           "int_bounds_text", "real_bounds_text"]


class ArgumentError(ValueError):
    """A bad argument or option value (a `ValueError`): the message names it and quotes
    the value. The binaries print it as one line and exit with 2."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def int_bounds_text(low: Optional[int] = None, high: Optional[int] = None) -> str:
    """'a positive integer', 'a non-negative integer', 'an integer in [2, 9]', ..."""
    if high is None:
        if low is None:
            return "an integer"
        if low == 1:
            return "a positive integer"
        if low == 0:
            return "a non-negative integer"
        return f"an integer >= {low}"
    if low is None:
        return f"an integer <= {high}"
    return f"an integer in [{low}, {high}]"


def check_int(value, name: str, low: Optional[int] = None, high: Optional[int] = None,
              allow_none: bool = False) -> Optional[int]:
    """`value` as an int, within [low, high] (either end may be None).

    Raises:
      ValueError: not an integer (a bool is not), out of bounds, or None without
        `allow_none`; the message names `name` and quotes `value`.
    """
    if value is None and allow_none:
        return None
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise ArgumentError(f"{name} must be {int_bounds_text(low, high)}, got {value!r}")
    return int(value)


def real_bounds_text(low: Optional[float] = None, high: Optional[float] = None,
                     low_open: bool = False, high_open: bool = False) -> str:
    """'a finite number > 0', 'a finite number in [0, 1)', ..."""
    if low is not None and high is not None:
        return (f"a finite number in {'(' if low_open else '['}{low:g}, "
                f"{high:g}{')' if high_open else ']'}")
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def check_real(value, name: str, low: Optional[float] = None,
               high: Optional[float] = None, low_open: bool = False,
               high_open: bool = False, allow_none: bool = False,
               allow_tensor: bool = False) -> Any:
    """`value` as a float: finite and within the bounds (open ends as flagged).

    Args:
      value: the value to check.
      name: the argument's name, for the message.
      low, high: bounds (None: unbounded); `low_open` / `high_open` exclude them.
      allow_none: None passes (returned as None).
      allow_tensor: anything that is not a Python/NumPy number (a tensor, a variable,
        a schedule) passes unchecked and is returned as it is.

    Raises:
      ValueError: the message names `name` and quotes `value`.
    """
    if value is None and allow_none:
        return None
    if allow_tensor and not isinstance(value, (numbers.Number, str, type(None))):
        return value
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = ((low is None or (v > low if low_open else v >= low))
              and (high is None or (v < high if high_open else v <= high)))
    if not ok:
        raise ArgumentError(f"{name} must be {real_bounds_text(low, high, low_open, high_open)}"
                         f", got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    """`value` if it is a bool (NumPy bools included); ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentError(f"{name} must be a bool, got {value!r}")


def check_choice(value, name: str, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`; ValueError listing them otherwise."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ArgumentError(f"{name} must be one of {listed}, got {value!r}")
    return value


def check_name(value, name: str) -> str:
    """`value` if it is a non-empty string (a metric or layer name)."""
    if not isinstance(value, str) or not value.strip():
        raise ArgumentError(f"{name} must be a non-empty string, got {value!r}")
    return value
