"""Training augmentations against the shortcuts deepfake data sets are known for.

Real and fake images often differ in compression, sharpness and size as well as in the
manipulation itself; re-compressing, blurring and rescaling both classes at random
teaches the model to ignore those. Each step has a probability (0 turns it off) and a
range. The ops are Pillow calls on uint8 RGB arrays; randomness comes from a generator
the caller seeds per sample, so a run is reproducible whatever the worker count.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..errors import InvalidArgumentError
from ..media.image import encode_jpeg


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (``*_p`` / ``flip``) and ranges of each augmentation step."""

    flip: float = 0.5
    crop_p: float = 0.5
    crop_scale: tuple[float, float] = (0.85, 1.0)
    color_p: float = 0.5
    color_strength: float = 0.2
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    rescale_p: float = 0.3
    rescale_factor: tuple[float, float] = (0.35, 0.9)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, n) > 0 for n in _PROBABILITIES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PROBABILITIES = ("flip", "crop_p", "color_p", "blur_p", "rescale_p", "jpeg_p")
_SHORT_NAMES = {
    "flip": "flip",
    "crop": "crop_p",
    "color": "color_p",
    "blur": "blur_p",
    "rescale": "rescale_p",
    "jpeg": "jpeg_p",
}
NO_AUGMENT = AugmentConfig(**{name: 0.0 for name in _PROBABILITIES})


def parse_augment(spec: str) -> AugmentConfig:
    """``"default"``, ``"none"``, or overrides of the default like ``"jpeg=0.8,blur=0"``.

    Keys: flip, crop, color, blur, rescale, jpeg (probabilities in [0, 1]).
    """
    spec = spec.strip().lower()
    if spec in ("", "default"):
        return AugmentConfig()
    if spec == "none":
        return NO_AUGMENT
    updates: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _SHORT_NAMES:
            raise InvalidArgumentError(
                f"Bad augmentation spec {part!r}: use 'default', 'none' or key=probability pairs "
                f"with keys {sorted(_SHORT_NAMES)}, e.g. 'jpeg=0.8,blur=0'."
            )
        try:
            p = float(value)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise InvalidArgumentError(f"Augmentation probability for {key!r} must lie in [0, 1]; got {value!r}.")
        updates[_SHORT_NAMES[key]] = p
    return replace(AugmentConfig(), **updates)


def augment(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of an ``HxWx3`` uint8 image, in the order a platform would apply them."""
    pil = Image.fromarray(image)
    w, h = pil.size
    if rng.random() < config.crop_p:
        scale = rng.uniform(*config.crop_scale)
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        pil = pil.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < config.flip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < config.color_p:
        s = config.color_strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            pil = enhancer(pil).enhance(rng.uniform(1 - s, 1 + s))
    if rng.random() < config.blur_p:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*config.blur_sigma)))
    if rng.random() < config.rescale_p:
        size = pil.size
        f = rng.uniform(*config.rescale_factor)
        small = (max(8, int(size[0] * f)), max(8, int(size[1] * f)))
        pil = pil.resize(small, Image.Resampling.BILINEAR).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < config.jpeg_p:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        with Image.open(io.BytesIO(encode_jpeg(np.asarray(pil), quality))) as decoded:
            pil = decoded.convert("RGB")
    return np.asarray(pil.convert("RGB"))
