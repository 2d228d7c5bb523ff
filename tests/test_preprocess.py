"""The one preprocessing of train and predict: resize, scale to [0, 1], normalise, channels first."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import preprocess
from deepfake_detector.errors import BundleError, InvalidArgumentError
from deepfake_detector.models.registry import IMAGENET_MEAN, IMAGENET_STD
from deepfake_detector.preprocess import MAX_INPUT_SIZE, MIN_INPUT_SIZE, Preprocessing


def _arithmetic(pre: Preprocessing, image: np.ndarray) -> np.ndarray:
    """The rule written out: resized float32 pixels / 255, minus mean, over std, channels first."""
    x = pre.planes(image).astype(np.float32)
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (pre.mean, pre.std))
    return (x / 255.0 - mean) / std


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


def _pillow(image: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    filters.update(nearest=Image.Resampling.NEAREST, area=Image.Resampling.BOX)
    return np.asarray(Image.fromarray(image).resize((size, size), filters[interpolation])).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "shape", [(299, 299), (300, 211), (97, 150), (1, 1), (1, 500), (500, 1), (40, 40), (1200, 900), (225, 223)]
)
def test_bilinear_resize_gives_pillows_pixels_within_one_grey_level(shape) -> None:
    """Bundles were trained on Pillow's bilinear filter; the faster kernel that replaced it in
    training and prediction must give the same picture: shrinking (which must average, not
    alias), enlarging, lines and single pixels."""
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    stripes = np.repeat(((x + y) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2)  # aliases unless averaged
    pre = Preprocessing(64)
    for image, share in ((noise, 0.01), (stripes, 0.5)):  # a stripe average sits on x.5, where rounding may part
        out = pre.planes(image)
        assert out.shape == (3, 64, 64) and out.dtype == np.uint8 and out.flags.c_contiguous
        gap = np.abs(out.astype(int) - _pillow(image, 64, "bilinear").astype(int))
        assert gap.max() <= 1 and (gap > 0).mean() < share, (gap.max(), (gap > 0).mean())


def test_planes_take_read_only_flipped_and_sliced_arrays() -> None:
    """Decoded pictures arrive as read-only views, flips and crops; each resizes like its copy,
    and one already at the input size only changes layout."""
    image = np.random.default_rng(5).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    read_only = image.copy()
    read_only.flags.writeable = False
    pre = Preprocessing(48)
    for view in (read_only, image[:, ::-1], image[10:120, 5:160], image[::2, ::3]):
        np.testing.assert_array_equal(pre.planes(view), pre.planes(np.ascontiguousarray(view)))
    same_size = pre.planes(image[:48, :48])
    assert same_size.flags.c_contiguous
    np.testing.assert_array_equal(same_size, image[:48, :48].transpose(2, 0, 1))


def test_without_the_vectorised_kernel_bilinear_is_pillows_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch's uint8 resize would run its slow threaded code (no AVX2), Pillow resizes."""
    monkeypatch.setattr(preprocess, "_fast_uint8_resize", lambda: False)
    image = np.random.default_rng(11).integers(0, 256, (299, 299, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Preprocessing(224).planes(image), _pillow(image, 224, "bilinear"))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((3, 64, 64), np.uint8),  # channels first
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 1), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
    ids=["channels-first", "float", "grey-2d", "one-channel", "rgba", "empty", "list"],
)
def test_anything_but_an_rgb_uint8_picture_is_refused_by_name(image: object) -> None:
    with pytest.raises(InvalidArgumentError, match="HxWx3 uint8"):
        Preprocessing(32)(image)


@pytest.mark.parametrize("interpolation", ["bicubic", "nearest", "area"])
def test_other_filters_are_pillows_own(interpolation: str) -> None:
    image = np.random.default_rng(9).integers(0, 256, (90, 133, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        Preprocessing(40, interpolation=interpolation).planes(image), _pillow(image, 40, interpolation)
    )


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
