"""The PyTorch view of a list of samples: decode, (self-blend), augment, preprocess.

Randomness is drawn from ``(seed, epoch, index)``, so a sample looks the same in a
resumed run as in an uninterrupted one, whatever the number of workers. With
``self_blend_p`` a real image becomes, with that probability, its self-blended fake
(label fake) before augmentation, so compression and blur hit made fakes and reals alike.
``landmarks`` (sample index to five points in the decoded image) shape the blend mask and
allow the face-part masks of ``blend_config.part_p``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError, DeepfakeDetectorError
from ..media.image import load_image
from ..preprocess import Preprocessing
from .augment import AugmentConfig, augment
from .dataset import Sample
from .self_blend import MIN_SIDE, SelfBlendConfig, self_blend

_T = TypeVar("_T")


class ImageDataset(Dataset):
    """Yields ``(tensor, target, index)``; an unreadable file is replaced by the next readable one."""

    def __init__(
        self,
        samples: list[Sample],
        preprocessing: Preprocessing,
        augment_config: AugmentConfig | None = None,
        seed: int = 42,
        self_blend_p: float = 0.0,
        *,
        landmarks: Mapping[int, np.ndarray] | None = None,
        blend_config: SelfBlendConfig | None = None,
    ) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.augment_config = augment_config if augment_config is not None and augment_config.enabled else None
        self.seed = seed
        self.self_blend_p = self_blend_p
        self.landmarks = dict(landmarks or {})
        self.blend_config = blend_config or SelfBlendConfig()
        self.epoch = 0
        # Decoded as prediction decodes: whole images at reduced scale, face-crop sets at full size.
        self._decode_side = preprocessing.decode_side if preprocessing.crop is None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> np.ndarray:
        """Sample ``index`` decoded as training decodes it (raises for an unreadable file)."""
        return load_image(self.samples[index].path, min_side=self._decode_side)

    def _image(self, index: int) -> tuple[np.ndarray, int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return self.image(i), i
            except DeepfakeDetectorError as exc:
                print(f"warning: skipping unreadable training file {exc}", file=sys.stderr)
        raise DatasetError(f"{self.samples[index].path}: no image of this data set can be decoded.")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, used = self._image(index)
        target = self.samples[used].target
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if (
            self.self_blend_p > 0
            and target == 0
            and min(image.shape[:2]) >= MIN_SIDE
            and rng.random() < self.self_blend_p
        ):
            points = self.landmarks.get(used)
            image, target = self_blend(image, rng, landmarks=points, config=self.blend_config)[0], 1
        if self.augment_config is not None:
            image = augment(image, self.augment_config, rng)
        return torch.from_numpy(self.preprocessing(image)), target, used


def plain_errors(batches: Iterable[_T]) -> Iterator[_T]:
    """``batches`` (a DataLoader), letting one of our errors raised in a worker reach the user as its own line.

    torch re-raises a worker's exception in the main process as the same type, with the
    worker's whole traceback as the message; this re-raises it with the original message.
    (torch can only do so for errors built from one message, such as the DatasetError that
    workers raise; ImageDataset turns a bad file into the next good one.)
    """
    try:
        yield from batches
    except DeepfakeDetectorError as exc:
        text = str(exc)
        marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        if not text.startswith("Caught ") or marker not in text:
            raise
        raise type(exc)(text[text.rindex(marker) + len(marker) :].strip()) from None
