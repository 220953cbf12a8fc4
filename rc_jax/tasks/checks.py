"""Argument checks shared by the task builders (concrete Python values only)."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value, minimum: int) -> int:
  """Returns `value` as an int, raising ValueError unless it is an integer >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def check_float(name: str, value, low: float, high: float = math.inf) -> float:
  """Returns `value` as a float, raising ValueError unless it is a real number in [low, high]."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
    raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
  return float(value)
