"""The PyTorch view of a list of samples: decode, augment, preprocess.

Augmentation randomness is drawn from ``(seed, epoch, index)``, so a sample looks the
same in a resumed run as in an uninterrupted one, whatever the number of workers.
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


class ImageDataset(Dataset):
    """Yields ``(tensor, target, index)``; an unreadable file is replaced by the next readable one."""

    def __init__(
        self,
        samples: list[Sample],
        preprocessing: Preprocessing,
        augment_config: AugmentConfig | None = None,
        seed: int = 42,
    ) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.augment_config = augment_config if augment_config is not None and augment_config.enabled else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int) -> tuple[np.ndarray, int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return load_image(self.samples[i].path), i
            except DeepfakeDetectorError as exc:
                print(f"warning: skipping unreadable training file {exc}", file=sys.stderr)
        raise DatasetError(f"{self.samples[index].path}: no image of this data set can be decoded.")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, used = self._image(index)
        if self.augment_config is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image = augment(image, self.augment_config, rng)
        return torch.from_numpy(self.preprocessing(image)), self.samples[used].target, used
