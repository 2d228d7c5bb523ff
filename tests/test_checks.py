"""The shared tests of what a setting holds."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_detector.checks import SEED_LIMIT, is_finite, is_seed, is_whole


@pytest.mark.parametrize("value", [0, -3, 7, np.int64(5), np.uint8(255)])
def test_whole_numbers(value: object) -> None:
    assert is_whole(value) and is_finite(value)


@pytest.mark.parametrize("value", [True, False, 2.0, "3", None, [1], np.float32(1.0)])
def test_not_whole_numbers(value: object) -> None:
    assert not is_whole(value)


@pytest.mark.parametrize("value", [0.5, -1e300, np.float32(0.25), np.float64(3.0)])
def test_finite_numbers(value: object) -> None:
    assert is_finite(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.nan, True, "0.5", None, 1j])
def test_not_finite_numbers(value: object) -> None:
    assert not is_finite(value)


def test_seeds() -> None:
    assert is_seed(0) and is_seed(SEED_LIMIT - 1) and is_seed(np.int64(42))
    assert not any(is_seed(v) for v in (-1, SEED_LIMIT, 2**70, 1.0, True))
