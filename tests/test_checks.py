"""tfcore.checks: the shared argument checks, their bounds and their wording."""
import numpy as np
import pytest

from tfcore import checks


@pytest.mark.parametrize("value,kwargs,message", [
    (0, dict(low=1), "n must be a positive integer, got 0"),
    (True, dict(low=1), "n must be a positive integer, got True"),
    (1.0, dict(low=1), "n must be a positive integer, got 1.0"),
    (-1, dict(low=0), "n must be a non-negative integer, got -1"),
    (1, dict(low=2), "n must be an integer >= 2, got 1"),
    (10, dict(low=2, high=9), r"n must be an integer in \[2, 9\], got 10"),
    (None, dict(low=1), "n must be a positive integer, got None"),
])
def test_check_int_rejects(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        checks.check_int(value, "n", **kwargs)


def test_check_int_accepts_and_normalises():
    assert checks.check_int(np.int64(3), "n", low=1) == 3
    assert type(checks.check_int(np.int64(3), "n", low=1)) is int
    assert checks.check_int(None, "n", low=1, allow_none=True) is None
    assert checks.check_int(-5, "n") == -5


@pytest.mark.parametrize("value,kwargs,message", [
    (float("nan"), dict(low=0), "x must be a finite number >= 0, got nan"),
    (float("inf"), dict(), "x must be a finite number, got inf"),
    (0.0, dict(low=0, low_open=True), "x must be a finite number > 0, got 0.0"),
    (1.0, dict(low=0, high=1, high_open=True), r"x must be a finite number in \[0, 1\), "
     "got 1.0"),
    ("1", dict(), "x must be a finite number, got '1'"),
    (False, dict(), "x must be a finite number, got False"),
])
def test_check_real_rejects(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        checks.check_real(value, "x", **kwargs)


def test_check_real_accepts():
    assert checks.check_real(np.float32(0.5), "x", low=0, high=1) == 0.5
    assert checks.check_real(2, "x", low=0) == 2.0
    sentinel = object()
    assert checks.check_real(sentinel, "x", low=0, allow_tensor=True) is sentinel
    with pytest.raises(ValueError):
        checks.check_real(-1.0, "x", low=0, allow_tensor=True)  # numbers still checked


def test_bool_choice_name():
    assert checks.check_bool(np.bool_(True), "b") is True
    with pytest.raises(ValueError, match="b must be a bool, got 1"):
        checks.check_bool(1, "b")
    assert checks.check_choice("a", "m", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="m must be one of a, b, got 'c'"):
        checks.check_choice("c", "m", ("a", "b"))
    with pytest.raises(ValueError, match="m must be one of 0, 1, got True"):
        checks.check_choice(True, "m", (0, 1))
    with pytest.raises(ValueError, match="monitor must be a non-empty string"):
        checks.check_name(" ", "monitor")
