"""A small generated real/fake data set for the demo and the tests.

"Real" images are smooth random scenes; "fake" ones are the same kind of scene with a
patch carrying a faint checkerboard, the periodic trace that up-sampling layers of image
generators leave. It is learnable in a few epochs on a CPU and needs no download. It
says nothing about real deepfakes: it exercises the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-80, 80), rng.uniform(-80, 80), rng.uniform(60, 190)
        img[..., c] = base + a * xx + b * yy
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-70, 70, size=3)
    return img


def synthetic_image(rng: np.random.Generator, size: int, fake: bool) -> np.ndarray:
    """One ``size x size`` uint8 RGB image; a fake carries a checkerboard patch."""
    img = _scene(rng, size)
    if fake:
        side = int(size * rng.uniform(0.4, 0.7))
        x0, y0 = rng.integers(0, size - side + 1, size=2)
        yy, xx = np.mgrid[0:side, 0:side]
        pattern = np.where((xx + yy) % 2 == 0, 1.0, -1.0)[..., None] * rng.uniform(30, 45)
        img[y0 : y0 + side, x0 : x0 + side] += pattern
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_synthetic_dataset(out_dir: str | Path, n_per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write ``out_dir/real/scenes/*.png`` and ``out_dir/fake/checkerboard/*.png``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for label, group in (("real", "scenes"), ("fake", "checkerboard")):
        folder = out_dir / label / group
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(synthetic_image(rng, size, fake=label == "fake")).save(folder / f"{label}_{i:04d}.png")
    return out_dir
