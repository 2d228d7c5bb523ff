"""Self-blended images: a real face crop blended with a changed copy of itself under a soft face mask."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from doubles import FixedFaces

from deepfake_detector.data.self_blend import SelfBlendConfig, crop_landmarks, self_blend
from deepfake_detector.errors import InvalidArgumentError
from deepfake_detector.faces.base import FaceBox

# MTCNN's five points (eyes, nose, mouth corners) on the crop below, measured once and rounded.
LANDMARKS = ((64.6, 100.7), (107.4, 103.8), (85.9, 128.6), (62.6, 140.1), (105.4, 141.9))
SEEDS = range(8)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real face: scikit-image's astronaut, cropped around her face (220x190, not square)."""
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut()[0:220, 140:330])


def _blend(face: np.ndarray, seed: int, landmarks: tuple | None = None, **config: object) -> tuple:
    return self_blend(face, np.random.default_rng(seed), landmarks=landmarks, config=SelfBlendConfig(**config))


@pytest.mark.parametrize("landmarks", [None, LANDMARKS], ids=["ellipse", "landmarks"])
def test_shapes_types_and_seeding(face: np.ndarray, landmarks: tuple | None) -> None:
    fake, mask = _blend(face, 0, landmarks)
    assert fake.shape == face.shape and fake.dtype == np.uint8
    assert mask.shape == face.shape[:2] and mask.dtype == np.float32
    again, again_mask = _blend(face, 0, landmarks)
    assert np.array_equal(fake, again) and np.array_equal(mask, again_mask)
    other, other_mask = _blend(face, 1, landmarks)
    assert not np.array_equal(fake, other) and not np.array_equal(mask, other_mask)


@pytest.mark.parametrize("landmarks", [None, LANDMARKS], ids=["ellipse", "landmarks"])
def test_fake_changes_the_image_only_under_the_mask(face: np.ndarray, landmarks: tuple | None) -> None:
    for seed in SEEDS:
        fake, mask = _blend(face, seed, landmarks)
        outside = mask == 0
        assert outside.mean() > 0.1
        assert np.array_equal(fake[outside], face[outside]), seed
        changed = (fake != face).any(axis=2)
        core = mask >= 0.9 * mask.max()
        assert changed[core].mean() > 0.5, seed


@pytest.mark.parametrize("landmarks", [None, LANDMARKS], ids=["ellipse", "landmarks"])
def test_mask_is_soft_and_covers_the_face_not_the_corners(face: np.ndarray, landmarks: tuple | None) -> None:
    height, width = face.shape[:2]
    centre_x, centre_y = np.mean(LANDMARKS, axis=0) if landmarks else (width / 2, height / 2)
    for seed in SEEDS:
        _, mask = _blend(face, seed, landmarks)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        assert ((mask > 0) & (mask < 1)).sum() > 100, seed
        assert mask[round(centre_y), round(centre_x)] >= 0.9 * mask.max() > 0, seed
        for rows in (slice(0, 8), slice(-8, None)):
            for cols in (slice(0, 8), slice(-8, None)):
                assert not mask[rows, cols].any(), seed


def test_landmark_mask_contains_every_landmark(face: np.ndarray) -> None:
    for seed in range(20):
        _, mask = _blend(face, seed, LANDMARKS)
        for x, y in LANDMARKS:
            assert mask[round(y), round(x)] >= 0.5 * mask.max() > 0, (seed, x, y)
    # The strongest warp and the smallest ellipse allowed still keep every point inside.
    for seed in range(20):
        _, mask = _blend(face, seed, LANDMARKS, warp=0.25, mask_scale=(0.5, 0.5), mask_blur=(1.0, 1.0))
        assert all(mask[round(y), round(x)] > 0 for x, y in LANDMARKS), seed


def test_mask_follows_the_landmarks() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(128, 160, 3), dtype=np.uint8)
    # A small face in the top-left quarter, tilted by the eye line.
    points = ((20.0, 24.0), (40.0, 30.0), (29.0, 38.0), (20.0, 46.0), (34.0, 50.0))
    for seed in SEEDS:
        _, mask = _blend(image, seed, points)
        ys, xs = np.nonzero(mask)
        assert xs.max() < 80 and ys.max() < 90, seed
        assert all(mask[round(y), round(x)] > 0 for x, y in points), seed


def test_profile_landmarks_with_coinciding_eyes_still_give_a_face_mask() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    points = ((30.0, 24.0), (30.0, 24.0), (28.0, 32.0), (30.0, 42.0), (30.0, 42.0))
    _, mask = _blend(image, 0, points)
    assert all(mask[round(y), round(x)] > 0 for x, y in points)
    assert not mask[:4, :4].any()


def _part_centres() -> dict[str, np.ndarray]:
    points = np.asarray(LANDMARKS)
    return {"eyes": points[:2].mean(axis=0), "nose": points[2], "mouth": points[3:].mean(axis=0)}


def test_part_masks_cover_some_face_parts_and_not_the_rest(face: np.ndarray) -> None:
    """With part_p=1 every mask is the union of one to three part ellipses: the parts it covers
    change from draw to draw, and the cheek (beside the nose, below the eye) is never covered."""
    left_cheek = (LANDMARKS[0][0] - 18, (LANDMARKS[0][1] + LANDMARKS[3][1]) / 2 + 6)
    seen: set[frozenset[str]] = set()
    for seed in range(40):
        fake, mask = _blend(face, seed, LANDMARKS, part_p=1.0, blend_ratios=(1.0,))
        covered = frozenset(name for name, (x, y) in _part_centres().items() if mask[round(y), round(x)] > 0.5)
        assert covered, seed
        seen.add(covered)
        assert mask[round(left_cheek[1]), round(left_cheek[0])] < 0.5, seed
        assert (mask > 0).mean() < 0.5, seed  # far less than a whole-face mask
        assert np.array_equal(fake[mask == 0], face[mask == 0])
    assert len(seen) >= 3 and any(len(parts) == 1 for parts in seen) and any(len(parts) > 1 for parts in seen)


def test_part_p_needs_landmarks(face: np.ndarray) -> None:
    """Without landmarks there are no parts to place: part_p changes nothing, not even the draws."""
    for seed in SEEDS:
        assert np.array_equal(_blend(face, seed)[1], _blend(face, seed, None, part_p=1.0)[1])


def test_part_masks_of_a_profile_are_sized_from_the_face_not_the_eye_distance() -> None:
    """Eyes on (almost) one point: the parts still get masks of a face's proportions."""
    image = np.full((128, 128, 3), 128, np.uint8)
    for eyes_apart in (0.0, 0.5):
        points = ((60.0, 40.0), (60.0 + eyes_apart, 40.0), (58.0, 64.0), (60.0, 84.0), (60.5, 84.0))
        for seed in SEEDS:
            _, mask = _blend(image, seed, points, part_p=1.0, blend_ratios=(1.0,))
            assert 0.005 < (mask > 0.5).mean() < 0.5, (eyes_apart, seed)


def test_crop_landmarks_takes_the_largest_face_if_its_points_are_inside(face: np.ndarray) -> None:
    small = FaceBox(0, 0, 10, 10, 0.99, ((1.0, 1.0), (5.0, 1.0), (3.0, 4.0), (2.0, 7.0), (4.0, 7.0)))
    large = FaceBox(40, 60, 120, 120, 0.9, LANDMARKS)
    np.testing.assert_allclose(crop_landmarks(face, FixedFaces([small, large])), LANDMARKS)
    outside = FaceBox(0, 0, 200, 200, 0.9, ((-3.0, 5.0), *LANDMARKS[1:]))
    assert crop_landmarks(face, FixedFaces([outside])) is None
    assert crop_landmarks(face, FixedFaces([FaceBox(0, 0, 50, 50, 0.9)])) is None  # no landmarks given
    assert crop_landmarks(face, FixedFaces([])) is None
    assert crop_landmarks(face, FixedFaces([FaceBox(0, 0, 50, 50, 0.9, ((1.0, 2.0),))])) is None  # not five points
    assert crop_landmarks(face, FixedFaces([FaceBox(0, 0, 50, 50, 0.9, ((float("nan"), 2.0), *LANDMARKS[1:]))])) is None


def test_blend_ratio_caps_the_mask(face: np.ndarray) -> None:
    for seed in range(4):
        _, mask = _blend(face, seed, blend_ratios=(0.5,))
        assert 0.45 < mask.max() <= 0.5


def test_smallest_accepted_crop() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    fake, mask = _blend(image, 3)
    assert fake.shape == (32, 32, 3) and 0 < mask.max() <= 1


def test_config_defaults_round_trip_through_to_dict() -> None:
    config = SelfBlendConfig()
    data = config.to_dict()
    assert set(data) == {f.name for f in fields(SelfBlendConfig)}
    assert SelfBlendConfig(**data) == config
    assert data["translate"] == 0.03 and data["scale"] == (0.95, 1.05)
    assert data["blend_ratios"] == (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    assert SelfBlendConfig(scale=[0.9, 1.1]).scale == (0.9, 1.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rgb_shift", -1.0),
        ("hue_shift", float("nan")),
        ("sharpen_p", 1.5),
        ("translate", True),
        ("warp", 0.3),
        ("scale", (1.05, 0.95)),
        ("downscale", (0.0, 0.5)),
        ("mask_blur", 0.1),
        ("ellipse_width", (0.2, 0.3, 0.4)),
        ("blend_ratios", ()),
        ("blend_ratios", (0.0, 1.0)),
        ("part_p", 1.5),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        SelfBlendConfig(**{field: value})


GOOD = np.zeros((40, 40, 3), np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image": GOOD.tolist()}, "image"),
        ({"image": GOOD.astype(np.float32)}, "image"),
        ({"image": GOOD[..., 0]}, "image"),
        ({"image": np.zeros((40, 40, 4), np.uint8)}, "image"),
        ({"image": np.zeros((31, 64, 3), np.uint8)}, "image"),
        ({"rng": 0}, "rng"),
        ({"rng": np.random.RandomState(0)}, "rng"),
        ({"landmarks": ((10.0, 10.0),) * 4}, "landmarks"),
        ({"landmarks": ((10.0, 10.0),) * 4 + ((10.0,),)}, "landmarks"),
        ({"landmarks": ((10.0, 10.0),) * 4 + ((float("nan"), 10.0),)}, "landmarks"),
        ({"landmarks": ((10.0, 10.0),) * 4 + ((40.0, 10.0),)}, "landmarks"),
        ({"landmarks": ((10.0, 10.0),) * 4 + ((10.0, -0.5),)}, "landmarks"),
        ({"config": {"translate": 0.1}}, "config"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs: dict, name: str) -> None:
    args = {"image": GOOD, "rng": np.random.default_rng(0), "landmarks": None, "config": SelfBlendConfig()} | kwargs
    with pytest.raises(InvalidArgumentError, match=name):
        self_blend(args.pop("image"), args.pop("rng"), **args)
