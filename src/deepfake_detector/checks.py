"""What a setting holds, said one way for every check of options, configs and recipes.

JSON and TOML can hold anything, and Python counts ``True`` as the number 1, so "a whole
number" and "a finite number" need saying precisely; every module asks these instead of
spelling the test again.
"""

from __future__ import annotations

import math
import numbers

SEED_LIMIT = 2**32  # numpy's generators take seeds from 0 to 2**32 - 1


def is_whole(value: object) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A real number (Python's or numpy's), not a bool, neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_seed(value: object) -> bool:
    """A whole number a random generator takes as its seed."""
    return is_whole(value) and 0 <= value < SEED_LIMIT  # type: ignore[operator]
