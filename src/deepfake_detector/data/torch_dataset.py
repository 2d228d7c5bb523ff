"""The PyTorch view of a list of samples: decode, (self-blend), augment, preprocess.

Randomness is drawn from ``(seed, epoch, index)``, so a sample looks the same in a
resumed run as in an uninterrupted one, whatever the number of workers. With
``self_blend_p`` a real image becomes, with that probability, its self-blended fake
(label fake) before augmentation, so compression and blur hit made fakes and reals alike.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError, DeepfakeDetectorError
from ..media.image import load_image
from ..preprocess import Preprocessing
from .augment import AugmentConfig, augment
from .dataset import Sample
from .self_blend import MIN_SIDE, self_blend


class ImageDataset(Dataset):
    """Yields ``(tensor, target, index)``; an unreadable file is replaced by the next readable one."""

    def __init__(
        self,
        samples: list[Sample],
        preprocessing: Preprocessing,
        augment_config: AugmentConfig | None = None,
        seed: int = 42,
        self_blend_p: float = 0.0,
    ) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.augment_config = augment_config if augment_config is not None and augment_config.enabled else None
        self.seed = seed
        self.self_blend_p = self_blend_p
        self.epoch = 0
        # Decoded as prediction decodes: whole images at reduced scale, face-crop sets at full size.
        self._decode_side = preprocessing.decode_side if preprocessing.crop is None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int) -> tuple[np.ndarray, int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return load_image(self.samples[i].path, min_side=self._decode_side), i
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
            image, target = self_blend(image, rng)[0], 1
        if self.augment_config is not None:
            image = augment(image, self.augment_config, rng)
        return torch.from_numpy(self.preprocessing(image)), target, used
