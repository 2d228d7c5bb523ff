"""Train / validation / test parts of the research sets, held out by source.

Quality numbers mean something only on data the model never saw, and a random split of
frames leaks: Face2Face and NeuralTextures crops are near copies of their real crop, and
one photo's faces are alike. So every rule here keeps a *source* on one side:

- ``ffpp_faces``: the ``test__`` file-name prefix is the test part (FaceForensics++' own split
  by video); the ``train__`` files are split into train and validation by the approximate
  per-video cluster of ``manifest.csv`` (a fake follows the cluster of its target video).
- ``face_photos``: real photographs only; whole photos alternate between the parts, so the
  faces of one group photo stay together.
- any other set (``stylegan_faces``, ``diffusion_faces``, ``yonsei_faces``, or a new one):
  each image is a different source; a stratified split by class and group.

Crops made by ``crop-faces`` are mapped back to their source file by name, so the split is
made once, on sources, and crops follow.
"""

from __future__ import annotations

import csv
import glob
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from ..media.files import images_below
from .dataset import Sample, label_name, scan_folder, stratified_split

PARTS = ("train", "val", "test")
FFPP = "ffpp_faces"
FACE_PHOTOS = "face_photos"
FACE_PHOTO_FOLDERS = ("single", "group", "none")


@dataclass
class SourceSplit:
    """Source files of every set, per part; ``group`` is ``"<set>/<group>"``."""

    parts: dict[str, list[Sample]] = field(default_factory=lambda: {p: [] for p in PARTS})

    def counts(self) -> dict[str, int]:
        return {p: len(s) for p, s in self.parts.items()}


def _ffpp_clusters(set_dir: Path) -> dict[str, str]:
    """Relative path -> approximate video cluster, from the set's manifest (empty without one)."""
    manifest = set_dir / "manifest.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as fh:
        return {row["path"]: row.get("approx_target_cluster") or row["path"] for row in csv.DictReader(fh)}


def _split_ffpp(set_dir: Path, samples: list[Sample], val_fraction: float, seed: int) -> dict[str, list[Sample]]:
    clusters = _ffpp_clusters(set_dir)
    test = [s for s in samples if s.path.name.startswith("test__")]
    train = [s for s in samples if not s.path.name.startswith("test__")]
    cluster_of = {s.path: clusters.get(s.path.relative_to(set_dir).as_posix(), s.path.name) for s in train}
    names = sorted(set(cluster_of.values()))
    random.Random(seed).shuffle(names)
    val_clusters = set(names[: round(len(names) * val_fraction)])
    return {
        "train": [s for s in train if cluster_of[s.path] not in val_clusters],
        "val": [s for s in train if cluster_of[s.path] in val_clusters],
        "test": test,
    }


def _split_face_photos(set_dir: Path) -> dict[str, list[Sample]]:
    """Every second photo to test; of the rest, every second to validation."""
    parts: dict[str, list[Sample]] = {p: [] for p in PARTS}
    for folder in FACE_PHOTO_FOLDERS:
        photos = sorted(images_below(set_dir / folder)) if (set_dir / folder).is_dir() else []
        for i, path in enumerate(photos):
            part = "test" if i % 2 else ("val" if i % 4 == 2 else "train")
            parts[part].append(Sample(path, 0, f"{FACE_PHOTOS}/{folder}"))
    return parts


def split_sources(
    data_root: str | Path, sets: list[str], *, test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 42
) -> SourceSplit:
    """Split the named sets below ``data_root`` into train, validation and test sources."""
    root = Path(data_root)
    split = SourceSplit()
    for name in sets:
        set_dir = root / name
        if not set_dir.is_dir():
            raise DatasetError(f"{set_dir}: no such data set folder.")
        if name == FACE_PHOTOS:
            parts = _split_face_photos(set_dir)
        else:
            samples = [Sample(s.path, s.target, f"{name}/{s.group}") for s in scan_folder(set_dir)]
            if name == FFPP:
                parts = _split_ffpp(set_dir, samples, val_fraction, seed)
            else:
                rest, test = stratified_split(samples, test_fraction, seed)
                train, val = stratified_split(rest, val_fraction, seed)
                parts = {"train": train, "val": val, "test": test}
        for part in PARTS:
            split.parts[part] += parts[part]
    return split


def crops_of(source: Sample, data_root: str | Path, crops_root: str | Path) -> list[Sample]:
    """The crops ``crop-faces`` made of one source file (named ``<file name>_face<i>`` or,
    for video frames, ``<file name>_frame<n>_face<i>``), with the source's label and group."""
    root, crops = Path(data_root), Path(crops_root)
    set_name = source.group.split("/", 1)[0]
    rel = source.path.relative_to(root / set_name)
    if set_name == FACE_PHOTOS:
        rel = Path("real") / rel
    folder = crops / set_name / rel.parent
    found = sorted(folder.glob(f"{glob.escape(rel.name)}_*face*")) if folder.is_dir() else []
    return [Sample(p, source.target, source.group) for p in found]


def write_manifest(samples: list[Sample], path: str | Path) -> Path:
    """A CSV manifest (``path,label,group``) that ``train`` and ``evaluate`` read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        writer.writerows((str(s.path.resolve()), label_name(s.target), s.group) for s in samples)
    return path
