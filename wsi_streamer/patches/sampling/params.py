"""Argument checks shared by the samplers. Each raises ``TypeError`` for a wrong type and
``ValueError`` for a wrong value, naming the argument, and returns the value normalised
(``int`` or ``float``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum``; bools are rejected (``True`` is not a size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_num_patches(value: Any) -> int:
    """-1 (an infinite stream) or a positive count."""
    count = check_int("num_patches", value, minimum=-1)
    if count == 0:
        raise ValueError("num_patches must be -1 (infinite) or >= 1, got 0")
    return count


def check_float(name: str, value: Any) -> float:
    """``value`` as a finite ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value}")
    return result


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    result = check_float(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return result


def check_fraction(name: str, value: Any) -> float:
    """A number in ``[0, 1]`` (inclusive ends)."""
    result = check_float(name, value)
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return result


def check_sequence(name: str, value: Any) -> Sequence[Any]:
    """A non-empty list, tuple or 1-D array (a string is not accepted)."""
    if not isinstance(value, (list, tuple, np.ndarray)) or np.ndim(value) != 1:
        raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return list(value)
