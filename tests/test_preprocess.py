"""The one preprocessing of train and predict: resize, scale to [0, 1], normalise, channels first."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import BundleError
from deepfake_detector.models.registry import IMAGENET_MEAN, IMAGENET_STD
from deepfake_detector.preprocess import MAX_INPUT_SIZE, MIN_INPUT_SIZE, Preprocessing


def _arithmetic(pre: Preprocessing, image: np.ndarray) -> np.ndarray:
    """The rule written out: float32 pixels / 255, minus mean, over std, channels first."""
    x = np.asarray(Image.fromarray(image).resize((pre.input_size,) * 2, Image.Resampling.BILINEAR), np.float32)
    x = (x / 255.0 - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize(
    ("mean", "std"),
    [((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), (IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))],
)
@pytest.mark.parametrize("shape", [(64, 64), (97, 150), (300, 211)])
def test_table_lookup_equals_the_arithmetic_bit_for_bit(mean, std, shape) -> None:
    pre = Preprocessing(64, mean, std)
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    image[0, :4] = [[0, 0, 0], [255, 255, 255], [1, 128, 254], [7, 77, 177]]  # the table's ends and middle
    out = pre(image)
    assert out.dtype == np.float32 and out.shape == (3, 64, 64) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _arithmetic(pre, image))


def test_a_preprocessing_is_still_a_value() -> None:
    """Equal settings are equal and hash alike (ensembles share one preprocessed copy per kind),
    before and after the table is built."""
    a, b = Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD), Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD)
    a(np.zeros((40, 40, 3), np.uint8))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Preprocessing.from_dict(a.to_dict()) == a


def test_settings_made_in_code_are_normalised_to_plain_values() -> None:
    """Training builds its Preprocessing from a registry spec, not from JSON: numpy numbers and
    ints become the same floats a saved config reads back, so the two compare equal."""
    pre = Preprocessing(np.int64(MIN_INPUT_SIZE), np.array(IMAGENET_MEAN, np.float32), [1, 2, 3])
    assert pre.input_size == MIN_INPUT_SIZE and type(pre.input_size) is int
    assert pre.std == (1.0, 2.0, 3.0) and all(type(v) is float for v in pre.mean + pre.std)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert Preprocessing(MAX_INPUT_SIZE).input_size == MAX_INPUT_SIZE


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("input_size", {"input_size": MIN_INPUT_SIZE - 1}),
        ("input_size", {"input_size": MAX_INPUT_SIZE + 1}),
        ("input_size", {"input_size": 64.0}),
        ("input_size", {"input_size": False}),
        ("std", {"std": (0.0, 1.0, 1.0)}),
        ("std", {"std": (float("nan"), 1.0, 1.0)}),
        ("std", {"std": (1.0, 1.0)}),
        ("mean", {"mean": (float("inf"), 0.0, 0.0)}),
        ("mean", {"mean": 0.5}),
        ("std", {"mean": (3e38, 0.0, 0.0), "std": (1e-3, 1.0, 1.0)}),  # each finite; their quotient is not
        ("std", {"std": (1e-50, 1.0, 1.0)}),  # positive, but zero in float32
        ("mean", {"mean": (1e39, 0.0, 0.0)}),  # finite, but infinite in float32
        ("face_detector", {"face_detector": 1}),
        ("crop", {"crop": {"margin": 0.3}}),
    ],
)
def test_settings_that_would_spoil_every_score_are_refused(field: str, kwargs: dict) -> None:
    with pytest.raises(BundleError, match=field):
        Preprocessing(**{"input_size": 32, **kwargs})
