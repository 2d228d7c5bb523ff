"""Face detection and cropping: the backends on real photos, the crop geometry by hand, the registry."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import DeepfakeDetectorError, InvalidArgumentError, UnknownModelError
from deepfake_detector.faces import (
    DEFAULT_FACE_DETECTOR,
    CropSpec,
    FaceBox,
    FaceDetector,
    MissingDependencyError,
    create_face_detector,
    crop_box,
    crop_face,
    list_face_detectors,
)
from deepfake_detector.media.image import load_image

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "face_photos"
SINGLES = (
    "single/facesvc__adele_2016.jpg",
    "single/facesvc__elon_musk_2015.jpg",
    "single/facesvc__benedict_cumberbatch_2014.png",
)
PACKAGES = {"mtcnn": "facenet_pytorch", "haar": "cv2"}


def _usable(name: str, **kwargs: object) -> FaceDetector:
    """The named detector, or a skip where its package is missing or unusable (OpenCV 5 has no
    Haar cascades; that refusal has its own test)."""
    try:
        return create_face_detector(name, **kwargs)
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


TILE = (360, 440)  # width, height of each third of the composed image


def photo(relative: str) -> np.ndarray:
    if not PHOTOS.is_dir():
        pytest.skip(f"shared face photos not found at {PHOTOS}")
    return load_image(PHOTOS / relative)


@pytest.fixture(scope="module", params=sorted(PACKAGES))
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return _usable(request.param)


@pytest.fixture(scope="module")
def three_faces() -> np.ndarray:
    """Three portraits, each fitted into an equal-width grey tile, side by side."""
    canvas = Image.new("RGB", (3 * TILE[0], TILE[1]), (128, 128, 128))
    for i, name in enumerate(SINGLES):
        portrait = Image.fromarray(photo(name))
        portrait.thumbnail(TILE)
        canvas.paste(portrait, (i * TILE[0] + (TILE[0] - portrait.width) // 2, (TILE[1] - portrait.height) // 2))
    return np.asarray(canvas).copy()


@pytest.fixture(scope="module")
def found_in_three(detector: FaceDetector, three_faces: np.ndarray) -> list[FaceBox]:
    """One detection run on the composed image per backend, shared by the tests that inspect it."""
    return detector.detect(three_faces)


def check_contract(boxes: list[FaceBox], image: np.ndarray) -> None:
    height, width = image.shape[:2]
    for box in boxes:
        assert 0 <= box.x and 0 <= box.y and box.w > 0 and box.h > 0
        assert box.x + box.w <= width + 1e-6 and box.y + box.h <= height + 1e-6
        assert 0.0 <= box.score <= 1.0
    scores = [b.score for b in boxes]
    assert scores == sorted(scores, reverse=True)


# --- the backends on real faces ----------------------------------------------------------


def test_three_faces_one_per_third(found_in_three: list[FaceBox], three_faces: np.ndarray) -> None:
    boxes = found_in_three
    check_contract(boxes, three_faces)
    assert len(boxes) == 3, boxes
    thirds = sorted(int((b.x + b.w / 2) // TILE[0]) for b in boxes)
    assert thirds == [0, 1, 2]
    for box in boxes:  # each box lies wholly inside its own third
        assert box.x // TILE[0] == (box.x + box.w - 1) // TILE[0]


def test_downscaled_boxes_map_back_to_the_full_image(
    detector: FaceDetector, found_in_three: list[FaceBox], three_faces: np.ndarray
) -> None:
    small = create_face_detector(detector.name, max_side=540).detect(three_faces)
    check_contract(small, three_faces)
    assert len(small) == len(found_in_three) == 3
    for box in small:
        assert max(box.iou(other) for other in found_in_three) > 0.6


def test_single_portrait_is_found_where_annotated(detector: FaceDetector) -> None:
    # The annotation's box for this photo (annotations/faces.csv) is 142,118,223,223.
    boxes = detector.detect(photo(SINGLES[0]))
    assert len(boxes) == 1
    assert boxes[0].iou(FaceBox(142, 118, 223, 223, 1.0)) >= 0.3


def test_flat_grey_and_tiny_images_have_no_face(detector: FaceDetector) -> None:
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []


def test_scene_without_people_has_no_face_for_mtcnn() -> None:
    pytest.importorskip("facenet_pytorch")
    assert create_face_detector("mtcnn").detect(photo("none/dlib__giraffe.jpg")) == []


def test_landmarks_sit_in_the_face(detector: FaceDetector, found_in_three: list[FaceBox]) -> None:
    if detector.name == "haar":
        assert all(box.landmarks is None for box in found_in_three)
        return
    for box in found_in_three:
        assert box.landmarks is not None and len(box.landmarks) == 5
        for px, py in box.landmarks:
            assert box.x <= px <= box.x + box.w and box.y <= py <= box.y + box.h
        eyes_y = (box.landmarks[0][1] + box.landmarks[1][1]) / 2
        mouth_y = (box.landmarks[3][1] + box.landmarks[4][1]) / 2
        assert eyes_y < box.landmarks[2][1] < mouth_y  # eyes above nose above mouth


def test_detect_refuses_what_is_not_an_rgb_uint8_image(detector: FaceDetector) -> None:
    for bad in (np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.float32), [[0, 0, 0]]):
        with pytest.raises(InvalidArgumentError, match="HxWx3 uint8"):
            detector.detect(bad)  # type: ignore[arg-type]


# --- registry ----------------------------------------------------------------------------


def test_list_face_detectors() -> None:
    assert list_face_detectors() == ["haar", "mtcnn"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_face_detector("bogus")
    assert "'bogus'" in str(info.value) and "haar" in str(info.value) and "mtcnn" in str(info.value)
    with pytest.raises(UnknownModelError, match="Did you mean 'mtcnn'"):
        create_face_detector("mtcn")


def test_auto_is_the_documented_default() -> None:
    pytest.importorskip(PACKAGES[DEFAULT_FACE_DETECTOR])
    assert DEFAULT_FACE_DETECTOR == "mtcnn"  # docs/faces.md explains the choice
    assert create_face_detector("auto").name == DEFAULT_FACE_DETECTOR
    assert create_face_detector().name == DEFAULT_FACE_DETECTOR


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="does not take 'scale_factor'"):
        create_face_detector("mtcnn", scale_factor=1.2)
    for name, kwargs in (
        ("mtcnn", {"max_side": 10}),
        ("mtcnn", {"thresholds": (0.6, 0.7)}),
        ("mtcnn", {"thresholds": (0.6, 0.7, 1.5)}),
        ("mtcnn", {"min_face_size": 4}),
        ("haar", {"scale_factor": 1.0}),
        ("haar", {"min_neighbors": -1}),
        ("haar", {"device": "cuda"}),
    ):
        with pytest.raises(InvalidArgumentError):
            create_face_detector(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "module", "line"),
    [
        ("mtcnn", "facenet_pytorch", "pip install --no-deps facenet-pytorch==2.6.0"),
        ("haar", "cv2", 'pip install "opencv-python-headless<5"'),
    ],
)
def test_missing_package_gives_the_install_line(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, line: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    with pytest.raises(MissingDependencyError) as info:
        create_face_detector(name)
    assert line in str(info.value)
    assert isinstance(info.value, DeepfakeDetectorError) and isinstance(info.value, ImportError)


def test_auto_falls_back_when_the_default_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    other = "haar" if DEFAULT_FACE_DETECTOR == "mtcnn" else "mtcnn"
    _usable(other)
    monkeypatch.setitem(sys.modules, PACKAGES[DEFAULT_FACE_DETECTOR], None)
    with pytest.warns(UserWarning, match=f"Using the '{other}' face detector instead"):
        detector = create_face_detector("auto", min_face_size=40)
    assert detector.name == other


def test_an_opencv_without_haar_cascades_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV 5 has neither CascadeClassifier nor cv2.data: the error says which version to install."""
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    with pytest.raises(MissingDependencyError, match=r"opencv-python-headless<5.*no Haar cascades"):
        create_face_detector("haar")


# --- FaceBox -----------------------------------------------------------------------------


def test_iou_by_hand() -> None:
    a = FaceBox(0, 0, 10, 10, 0.9)
    assert a.iou(a) == 1.0
    assert a.iou(FaceBox(5, 0, 10, 10, 0.5)) == pytest.approx(50 / 150)
    assert a.iou(FaceBox(10, 0, 10, 10, 0.5)) == 0.0  # touching edges share no area
    assert a.iou(FaceBox(2, 2, 5, 5, 0.5)) == pytest.approx(25 / 100)


def test_facebox_to_dict_is_json() -> None:
    box = FaceBox(1.5, 2.0, 3.0, 4.0, 0.75, ((1.0, 2.0), (3.0, 4.0)))
    data = json.loads(json.dumps(box.to_dict()))
    assert data == {"x": 1.5, "y": 2.0, "w": 3.0, "h": 4.0, "score": 0.75, "landmarks": [[1.0, 2.0], [3.0, 4.0]]}
    assert FaceBox(0, 0, 1, 1, 0.1).to_dict()["landmarks"] is None


# --- crop geometry -----------------------------------------------------------------------


def test_margin_zero_is_the_exact_box() -> None:
    assert crop_box(FaceBox(10, 20, 30, 40, 1.0), (100, 100), CropSpec(margin=0.0, square=False)) == (10, 20, 40, 60)


def test_margin_half_on_a_10x20_box() -> None:
    box = FaceBox(50, 20, 10, 20, 1.0)  # centre (55, 30)
    # 0.5 of the size on each side: 20 x 40, around the centre.
    assert crop_box(box, (100, 100), CropSpec(margin=0.5, square=False)) == (45, 10, 65, 50)
    # square grows the shorter side to 40.
    assert crop_box(box, (100, 100), CropSpec(margin=0.5, square=True)) == (35, 10, 75, 50)


def test_square_makes_equal_sides_away_from_edges() -> None:
    for w, h in ((10, 30), (30, 10), (17, 23)):
        x0, y0, x1, y1 = crop_box(FaceBox(100, 100, w, h, 1.0), (400, 400), CropSpec(margin=0.3))
        assert x1 - x0 == y1 - y0


def test_float_noise_adds_no_pixel_and_fractions_round_outwards() -> None:
    # 10 * 1.6 is 16.000000000000004 in floating point; the crop must still be 16 wide.
    assert crop_box(FaceBox(10, 10, 10, 10, 1.0), (100, 100), CropSpec(margin=0.3)) == (7, 7, 23, 23)
    assert crop_box(FaceBox(10.2, 10.7, 5.1, 5.1, 1.0), (100, 100), CropSpec(margin=0.0)) == (10, 10, 16, 16)


def test_crop_is_clipped_at_the_image_edges() -> None:
    spec = CropSpec(margin=0.5, square=True)
    assert crop_box(FaceBox(90, 85, 10, 10, 1.0), (100, 120), spec) == (85, 80, 105, 100)  # (height, width)
    assert crop_box(FaceBox(0, 0, 10, 10, 1.0), (100, 120), spec) == (0, 0, 15, 15)


def test_tiny_image_gives_the_whole_image() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    box = FaceBox(0, 0, 3, 2, 1.0)
    assert crop_box(box, image.shape[:2], CropSpec(margin=2.0)) == (0, 0, 3, 2)
    np.testing.assert_array_equal(crop_face(image, box, CropSpec(margin=2.0)), image)


def test_crop_face_is_a_copy_of_the_region() -> None:
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    box = FaceBox(20, 10, 10, 20, 1.0)
    spec = CropSpec(margin=0.5, square=False)
    face = crop_face(image, box, spec)
    x0, y0, x1, y1 = crop_box(box, image.shape[:2], spec)
    assert face.shape == (40, 20, 3) == (y1 - y0, x1 - x0, 3)
    np.testing.assert_array_equal(face, image[y0:y1, x0:x1])
    face[:] = 0
    assert image[y0:y1, x0:x1].any()


def test_box_outside_the_image_or_bad_shape_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="outside"):
        crop_box(FaceBox(200, 200, 10, 10, 1.0), (100, 100), CropSpec(margin=0.0))
    with pytest.raises(InvalidArgumentError, match="positive size"):
        crop_box(FaceBox(0, 0, 0, 10, 1.0), (100, 100), CropSpec())
    with pytest.raises(InvalidArgumentError, match="image_shape"):
        crop_box(FaceBox(0, 0, 5, 5, 1.0), (0, 100), CropSpec())
    with pytest.raises(InvalidArgumentError, match="HxWx3 uint8"):
        crop_face(np.zeros((10, 10), np.uint8), FaceBox(0, 0, 5, 5, 1.0), CropSpec())


# --- CropSpec ----------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [-0.1, 2.01, math.nan, math.inf, "0.3", True, None])
def test_cropspec_refuses_bad_margins(margin: object) -> None:
    with pytest.raises(InvalidArgumentError, match="margin"):
        CropSpec(margin=margin)  # type: ignore[arg-type]


def test_cropspec_bounds_square_and_round_trip() -> None:
    assert CropSpec(margin=0).margin == 0.0 and CropSpec(margin=2).margin == 2.0
    with pytest.raises(InvalidArgumentError, match="square"):
        CropSpec(square="yes")  # type: ignore[arg-type]
    spec = CropSpec(margin=0.45, square=False)
    assert CropSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert CropSpec.from_dict({}) == CropSpec() == CropSpec(0.3, True)
    with pytest.raises(InvalidArgumentError, match="unknown crop spec key"):
        CropSpec.from_dict({"margin": 0.3, "pad": 2})
    with pytest.raises(InvalidArgumentError, match="margin"):
        CropSpec.from_dict({"margin": 5})
    with pytest.raises(InvalidArgumentError, match="mapping"):
        CropSpec.from_dict([("margin", 0.3)])  # type: ignore[arg-type]
