"""Data sets, splits, augmentations and generated data for training and evaluation."""

from .augment import NO_AUGMENT, AugmentConfig, augment, parse_augment
from .dataset import Sample, class_counts, load_dataset, read_manifest, scan_folder, stratified_split

__all__ = [
    "NO_AUGMENT",
    "AugmentConfig",
    "Sample",
    "augment",
    "class_counts",
    "load_dataset",
    "parse_augment",
    "read_manifest",
    "scan_folder",
    "stratified_split",
]
