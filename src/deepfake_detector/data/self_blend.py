"""Self-blended images (SBI): training fakes made from one real face.

After Shiohara and Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022).
A detector trained on the fakes of one manipulation method learns that method's
fingerprint and misses the next one. What face swaps share is the paste: a slightly
different face is blended into the frame under a face-shaped mask, which leaves a seam
and a colour, sharpness and alignment mismatch between inside and outside. A
self-blended image keeps only that: a face crop is blended with a colour-shifted,
re-sharpened or blurred, slightly moved copy of itself under a random soft face mask.
No second identity and no generator are involved, so the blend is the only cue to learn.

How training uses it: the data set wrapper takes real face crops; with probability ``p``
it replaces one by ``self_blend(image, rng)[0]`` and labels it fake (target 1), otherwise
it keeps it as real (0.5 balances the classes when the data are all real; lower it when
real fakes are mixed in). Draw ``rng`` from ``(seed, epoch, index)`` like the other
augmentations, so a resumed run sees the same fakes, and blend before the ordinary
augmentations (JPEG, blur, rescale), which must hit real and fake alike. Pass the face's
five MTCNN landmarks, moved into crop coordinates, when they are known: the mask then
follows the face; without them it is a random ellipse around the crop centre, which fits
crops made by ``crop-faces`` (the face box centred, with a margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ..checks import is_finite
from ..errors import InvalidArgumentError
from ..faces.base import FaceDetector, check_image

MIN_SIDE = 32
"""Smallest crop side: below it the soft mask edge and the frequency change have no room."""

# Control points per side of the random warp: enough to bend the outline a few times around
# the face (cheeks, jaw, forehead differ from face to face) without fraying it.
_WARP_GRID = 4
# Landmarks are kept within this fraction of the ellipse radius. The warp moves the outline by
# at most sqrt(2) * _MAX_WARP = 0.35 of the shorter semi-axis, less than the 0.4 left, and the
# blur only spreads the mask, so every landmark stays inside it.
_LANDMARK_RADIUS = 0.6
_MAX_WARP = 0.25


@dataclass(frozen=True)
class SelfBlendConfig:
    """Ranges of every random step; each value is drawn uniformly from its range per sample.

    Source copy, colour: ``rgb_shift`` adds up to that many grey levels to each channel;
    ``hue_shift`` turns the hue by up to that fraction of the colour circle; ``saturation``,
    ``brightness`` and ``contrast`` change by up to that fraction. Frequency: with
    probability ``sharpen_p`` an unsharp mask of strength in ``sharpen_amount``, otherwise a
    down- and up-sampling by a factor in ``downscale`` (the softness of a face generated at
    low resolution). Geometry: a shift of up to ``translate`` of the width and height and a
    zoom in ``scale``: the misalignment a swap leaves.

    Mask: with landmarks, an ellipse fitted to them with each semi-axis scaled by a factor
    in ``mask_scale``; without, an ellipse around the crop centre, moved by up to
    ``ellipse_shift`` of the crop, with semi-axes in ``ellipse_width`` and
    ``ellipse_height`` (fractions of the crop's width and height). Either is bent by a
    smooth random warp of up to ``warp`` of its shorter semi-axis, softened by a Gaussian
    blur with sigma in ``mask_blur`` (same unit), and multiplied by one of
    ``blend_ratios`` (a repeated value is drawn more often).

    Parts: with landmarks, with probability ``part_p`` the mask covers one or more face
    parts instead of the whole face (the eyes, the nose, the mouth; each kept with
    probability one half, at least one), an ellipse each, sized from the face (its eye
    distance, or its eye-to-mouth height when larger) and scaled like the face's: the local
    edit of a composite that pastes another eye or mouth in, whose seams are shorter and lie
    inside the face.
    """

    rgb_shift: float = 20.0
    hue_shift: float = 0.02
    saturation: float = 0.15
    brightness: float = 0.1
    contrast: float = 0.1
    sharpen_p: float = 0.5
    sharpen_amount: tuple[float, float] = (0.3, 1.0)
    downscale: tuple[float, float] = (0.35, 0.7)
    translate: float = 0.03
    scale: tuple[float, float] = (0.95, 1.05)
    mask_scale: tuple[float, float] = (0.85, 1.15)
    ellipse_width: tuple[float, float] = (0.22, 0.30)
    ellipse_height: tuple[float, float] = (0.30, 0.38)
    ellipse_shift: float = 0.05
    warp: float = 0.1
    mask_blur: tuple[float, float] = (0.04, 0.15)
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    part_p: float = 0.0

    def __post_init__(self) -> None:
        for name, low, high in _AMOUNTS:
            object.__setattr__(self, name, _amount(name, getattr(self, name), low, high))
        for name, low, high in _RANGES:
            object.__setattr__(self, name, _range(name, getattr(self, name), low, high))
        ratios = self.blend_ratios
        if not isinstance(ratios, (tuple, list)) or not ratios:
            raise InvalidArgumentError(f"blend_ratios must be a non-empty list of numbers in (0, 1]; got {ratios!r}.")
        object.__setattr__(
            self, "blend_ratios", tuple(_amount("blend_ratios", r, 0.0, 1.0, open_low=True) for r in ratios)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for a run's JSON config; ``SelfBlendConfig(**d)`` reads them back."""
        return asdict(self)


# (field, lowest, highest) of the single amounts and of the (low, high) ranges.
_AMOUNTS = (
    ("rgb_shift", 0.0, 255.0),
    ("hue_shift", 0.0, 0.5),
    ("saturation", 0.0, 1.0),
    ("brightness", 0.0, 1.0),
    ("contrast", 0.0, 1.0),
    ("sharpen_p", 0.0, 1.0),
    ("translate", 0.0, 0.25),
    ("ellipse_shift", 0.0, 0.25),
    ("warp", 0.0, _MAX_WARP),
    ("part_p", 0.0, 1.0),
)
_RANGES = (
    ("sharpen_amount", 0.0, 5.0),
    ("downscale", 0.05, 1.0),
    ("scale", 0.5, 2.0),
    ("mask_scale", 0.5, 2.0),
    ("ellipse_width", 0.05, 0.5),
    ("ellipse_height", 0.05, 0.5),
    ("mask_blur", 0.01, 1.0),
)


def _amount(name: str, value: object, low: float, high: float, *, open_low: bool = False) -> float:
    if is_finite(value):
        number = float(value)  # type: ignore[arg-type]
        if (low < number if open_low else low <= number) and number <= high:
            return number
    bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    raise InvalidArgumentError(f"{name} must be a number in {bounds}; got {value!r}.")


def _range(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidArgumentError(f"{name} must be a (low, high) pair; got {value!r}.")
    lo, hi = (_amount(name, v, low, high) for v in value)
    if lo > hi:
        raise InvalidArgumentError(f"{name} must be a (low, high) pair with low <= high; got {value!r}.")
    return lo, hi


def self_blend(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    landmarks: Sequence[tuple[float, float]] | np.ndarray | None = None,
    config: SelfBlendConfig = SelfBlendConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """A self-blended fake of one real face crop, and the mask that made it.

    ``image`` is an ``HxWx3`` uint8 RGB face crop, at least 32x32. ``landmarks`` are
    MTCNN's five ``(x, y)`` points in crop pixels (left eye, right eye, nose, left and right
    mouth corner, as in ``FaceBox.landmarks``), or ``None``; all must lie inside the crop
    (detected landmarks are not clipped, so drop a face's points when one falls outside). Returns the fake (``HxWx3``
    uint8) and the mask (``HxW`` float32 in [0, 1]); where the mask is 0 the fake equals
    ``image`` exactly. All randomness comes from ``rng``, so a seed gives one result.
    """
    image = _check_crop(image)
    if not isinstance(rng, np.random.Generator):
        raise InvalidArgumentError(f"rng must be a numpy Generator (np.random.default_rng(seed)); got {rng!r}.")
    if not isinstance(config, SelfBlendConfig):
        raise InvalidArgumentError(f"config must be a SelfBlendConfig; got {type(config).__name__}.")
    points = None if landmarks is None else _check_landmarks(landmarks, image.shape[:2])

    target = image.astype(np.float32)
    source = _shift_geometry(_change_frequency(_shift_colour(target, rng, config), rng, config), rng, config)
    mask = _face_mask(image.shape[:2], points, rng, config)
    # target + m * (source - target) keeps target exactly where m == 0.
    fake = target + mask[..., None] * (source - target)
    return np.clip(np.rint(fake), 0, 255).astype(np.uint8), mask


def crop_landmarks(image: np.ndarray, detector: FaceDetector) -> np.ndarray | None:
    """The five landmarks of the largest face with landmarks that ``detector`` finds in a face
    crop (the crop's own face), as ``(5, 2)`` crop pixels; None when there is none, or when
    that face's points are not five finite points all inside the crop (what
    ``self_blend(landmarks=...)`` accepts)."""
    faces = [f for f in detector.detect(image) if f.landmarks is not None]
    if not faces:
        return None
    points = np.asarray(max(faces, key=lambda f: f.w * f.h).landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return None
    return points if _inside(points, image.shape[:2]).all() else None


def _check_crop(image: object) -> np.ndarray:
    image = check_image(image)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InvalidArgumentError(f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels; got {width}x{height}.")
    return image


def _inside(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which ``(x, y)`` points lie inside an image of ``shape`` (height, width first)."""
    height, width = shape[:2]
    return (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)


def _check_landmarks(landmarks: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        points = np.empty(0)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise InvalidArgumentError(
            f"landmarks must be five finite (x, y) points (MTCNN's eyes, nose, mouth corners) or None; "
            f"got {landmarks!r}."
        )
    inside = _inside(points, shape)
    if not inside.all():
        raise InvalidArgumentError(
            f"landmarks must lie inside the {shape[1]}x{shape[0]} image (crop coordinates); "
            f"got {points[~inside].tolist()} outside."
        )
    return points


def _shift_colour(image: np.ndarray, rng: np.random.Generator, config: SelfBlendConfig) -> np.ndarray:
    """Per-channel shift, hue and saturation, brightness and contrast: the colour mismatch of a paste."""
    out = np.clip(image + rng.uniform(-config.rgb_shift, config.rgb_shift, size=3).astype(np.float32), 0, 255)
    hsv = cv2.cvtColor(out / 255.0, cv2.COLOR_RGB2HSV)  # float input: hue in degrees, S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-config.hue_shift, config.hue_shift)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + rng.uniform(-config.saturation, config.saturation)), 0, 1)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    mean = float(out.mean())
    contrast = 1.0 + rng.uniform(-config.contrast, config.contrast)
    brightness = 255.0 * rng.uniform(-config.brightness, config.brightness)
    return np.clip((out - mean) * contrast + mean + brightness, 0, 255).astype(np.float32)


def _change_frequency(image: np.ndarray, rng: np.random.Generator, config: SelfBlendConfig) -> np.ndarray:
    """Sharpen, or blur by resampling: the sharpness mismatch between a generated face and its frame.

    The unsharp mask works at a 1-pixel radius, the finest detail, where sharpening filters act.
    """
    height, width = image.shape[:2]
    if rng.random() < config.sharpen_p:
        amount = float(rng.uniform(*config.sharpen_amount))
        out = image + amount * (image - cv2.GaussianBlur(image, (0, 0), 1.0))
    else:
        factor = rng.uniform(*config.downscale)
        small = cv2.resize(
            image, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
        )
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0, 255)


def _shift_geometry(image: np.ndarray, rng: np.random.Generator, config: SelfBlendConfig) -> np.ndarray:
    """A small zoom and shift: the misalignment between a pasted face and the one below it."""
    height, width = image.shape[:2]
    zoom = rng.uniform(*config.scale)
    dx, dy = rng.uniform(-config.translate, config.translate, size=2) * (width, height)
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), 0.0, zoom)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Unit vectors along the eye line and towards the top of the face, the face's size
    (the larger of the eye distance and the eye-to-mouth height, at least 2 px) and that height.

    A profile, whose eyes coincide, takes its axes from the eye-to-mouth line instead.
    """
    left_eye, right_eye, _, mouth_left, mouth_right = points
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
    across = right_eye - left_eye
    if np.hypot(*across) < 1e-6:
        down = mouth_mid - eye_mid
        across = np.array([down[1], -down[0]]) if np.hypot(*down) >= 1e-6 else np.array([1.0, 0.0])
    across = across / np.hypot(*across)
    up = np.array([across[1], -across[0]])  # the eye line turned a quarter towards the top of the image
    eye_distance = float(np.hypot(*(right_eye - left_eye)))
    face_height = abs(float((eye_mid - mouth_mid) @ up))
    return across, up, max(eye_distance, face_height, 2.0), face_height


def _landmark_ellipse(
    points: np.ndarray, rng: np.random.Generator, config: SelfBlendConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, unit axes and semi-axes of a face ellipse from five points, forehead and chin included.

    The axes follow the eye line; the size is set by the eye distance and the eye-to-mouth
    height (proportions of an average frontal face), then grown if needed so every point
    stays well inside.
    """
    across, up, size, face_height = _face_frame(points)
    eye_mid, mouth_mid = (points[0] + points[1]) / 2, (points[3] + points[4]) / 2
    # The forehead reaches further above the eyes than the chin below the mouth: move up a little.
    centre = (eye_mid + mouth_mid) / 2 + 0.1 * face_height * up
    semi = np.array([1.0, 1.45]) * size * rng.uniform(*config.mask_scale, size=2)
    relative = (points - centre) @ np.stack([across, up], axis=1)
    reach = float(np.sqrt(((relative / semi) ** 2).sum(axis=1)).max())
    semi *= max(1.0, reach / _LANDMARK_RADIUS)
    return centre, np.stack([across, up]), semi


# Each part's ellipse, in units of the face's size (the eye distance of a frontal face; see
# _face_frame): (semi-axis across, semi-axis up), and how far its centre lies above the
# part's landmark. The eye ellipse spans both eyes; the nose's reaches from the tip towards
# the bridge; the mouth's spans the corners. Neighbours may touch.
_PARTS = {"eyes": ((0.85, 0.28), 0.0), "nose": ((0.28, 0.32), 0.2), "mouth": ((0.6, 0.25), 0.0)}


def _part_ellipses(
    points: np.ndarray, rng: np.random.Generator, config: SelfBlendConfig
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Centre, unit axes and semi-axes of the ellipse of each chosen face part (at least one)."""
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    # Axes and size as the whole-face ellipse takes them: a profile, whose eyes nearly coincide,
    # still gets parts sized from the face's height rather than from a vanishing eye distance.
    across, up, size, _ = _face_frame(points)
    axes = np.stack([across, up])
    marks = {"eyes": (left_eye + right_eye) / 2, "nose": nose, "mouth": (mouth_left + mouth_right) / 2}
    chosen = [name for name in _PARTS if rng.random() < 0.5] or [list(_PARTS)[int(rng.integers(len(_PARTS)))]]
    ellipses = []
    for name in chosen:
        semi, raise_by = _PARTS[name]
        centre = marks[name] + raise_by * size * up
        ellipses.append((centre, axes, np.array(semi) * size * rng.uniform(*config.mask_scale, size=2)))
    return ellipses


def _random_ellipse(
    shape: tuple[int, int], rng: np.random.Generator, config: SelfBlendConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, unit axes and semi-axes of an upright ellipse where a centred face crop has its face."""
    height, width = shape
    shift = rng.uniform(-config.ellipse_shift, config.ellipse_shift, size=2) * (width, height)
    centre = np.array([width / 2, height / 2]) + shift
    semi = np.array([rng.uniform(*config.ellipse_width) * width, rng.uniform(*config.ellipse_height) * height])
    return centre, np.eye(2), semi


def _face_mask(
    shape: tuple[int, int], points: np.ndarray | None, rng: np.random.Generator, config: SelfBlendConfig
) -> np.ndarray:
    """The soft blend mask: a face ellipse (or the ellipses of some face parts), bent by a smooth
    random warp, blurred, scaled by a ratio."""
    height, width = shape
    if points is None:
        ellipses = [_random_ellipse(shape, rng, config)]
    elif config.part_p > 0 and rng.random() < config.part_p:
        ellipses = _part_ellipses(points, rng, config)
    else:
        ellipses = [_landmark_ellipse(points, rng, config)]
    shorter = min(float(semi.min()) for _, _, semi in ellipses)
    # Moving each pixel's sampling point by a smooth random field bends the outline like a face's.
    coarse = rng.uniform(-1.0, 1.0, size=(2, _WARP_GRID, _WARP_GRID)).astype(np.float32)
    shift = [
        np.clip(cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC), -1, 1) * config.warp * shorter
        for c in coarse
    ]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = np.zeros((height, width), bool)
    for centre, axes, semi in ellipses:
        offset_x, offset_y = xs + shift[0] - centre[0], ys + shift[1] - centre[1]
        u = (offset_x * axes[0, 0] + offset_y * axes[0, 1]) / semi[0]
        v = (offset_x * axes[1, 0] + offset_y * axes[1, 1]) / semi[1]
        inside |= u**2 + v**2 <= 1.0
    mask = inside.astype(np.float32)
    sigma = rng.uniform(*config.mask_blur) * shorter
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    ratio = config.blend_ratios[int(rng.integers(len(config.blend_ratios)))]
    return (np.clip(mask, 0.0, 1.0) * ratio).astype(np.float32)
