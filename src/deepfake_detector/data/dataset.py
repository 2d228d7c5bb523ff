"""Labelled data sets: folders with ``real``/``fake`` subfolders, or a CSV manifest.

The mapping from folder or CSV label to the integer target (1 = fake) lives here and
only here. A sample's group is the first folder below its class folder (for example the
manipulation method), or the manifest's ``group`` column.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InvalidArgumentError
from ..media.files import images_below
from ..results import LABEL_FAKE, LABEL_REAL

CLASS_TARGETS = {LABEL_REAL: 0, LABEL_FAKE: 1}


def label_name(target: int) -> str:
    """The class name of an integer target."""
    return LABEL_FAKE if target == 1 else LABEL_REAL


_LABEL_ALIASES = {"real": 0, "fake": 1, "0": 0, "1": 1}


@dataclass(frozen=True)
class Sample:
    """One labelled file: ``target`` is 1 for fake, 0 for real."""

    path: Path
    target: int
    group: str

    @property
    def label(self) -> str:
        return label_name(self.target)


def _class_dirs(folder: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() in CLASS_TARGETS:
            found.setdefault(CLASS_TARGETS[child.name.lower()], []).append(child)
    return found


def scanned_as_data(path: str | Path, root: str | Path) -> bool:
    """Whether files written at ``path`` would be read back as data by :func:`scan_folder` of
    ``root``: ``path`` is ``root`` itself or lies below one of its real/fake folders (those of
    a nested set included). Elsewhere under ``root`` (``root/runs/x``) nothing is scanned."""
    path, root = Path(path).resolve(), Path(root).resolve()
    if path == root:
        return True
    if root not in path.parents:
        return False
    return any(part.lower() in CLASS_TARGETS for part in path.relative_to(root).parts)


def _dataset_roots(root: Path, max_depth: int = 3) -> list[Path]:
    """``root`` if it holds real/fake folders, else the folders below it that do."""
    if _class_dirs(root):
        return [root]
    roots: list[Path] = []
    if max_depth > 0:
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                roots.extend(_dataset_roots(child, max_depth - 1))
    return roots


def scan_folder(root: str | Path, *, videos: bool = False) -> list[Sample]:
    """Every image (and video, if asked) below ``root/real`` and ``root/fake`` (any letter case, any depth).

    When ``root`` itself has no class folders, each folder below it (up to three levels)
    that has them is scanned and its relative path prefixes the groups, so a folder of
    several data sets can be used at once.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found.")
    roots = _dataset_roots(root)
    if not roots:
        raise DatasetError(
            f"{root}: no 'real' or 'fake' subfolder found (letter case does not matter). "
            "Put images in DATA/real/... and DATA/fake/..., or pass a CSV manifest with columns path,label[,group]."
        )
    samples: list[Sample] = []
    for set_root in roots:
        prefix = "" if set_root == root else set_root.relative_to(root).as_posix() + "/"
        for target, dirs in _class_dirs(set_root).items():
            for class_dir in dirs:
                for path in images_below(class_dir, videos=videos):
                    parts = path.relative_to(class_dir).parts
                    group = parts[0] if len(parts) > 1 else class_dir.name.lower()
                    samples.append(Sample(path, target, prefix + group))
    if not samples:
        raise DatasetError(f"{root}: the real/fake folders hold no images.")
    return samples


def read_manifest(csv_path: str | Path) -> list[Sample]:
    """Samples from a CSV with a header ``path,label[,group]``; paths relative to the CSV.

    Rows naming the same file (after resolving the path) with the same label are collapsed
    into the first of them, with a warning on stderr: repeated rows usually come from joining
    lists, and copies of one file would land in both parts of a train/validation split. A file
    listed both as real and as fake is refused (DatasetError), as no label can be trusted.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: manifest not found.")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: unreadable manifest ({exc}).") from exc
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(
            f"{csv_path}: a manifest needs a header with columns 'path' and 'label' and at least one row."
        )
    samples = []
    for line, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip().lower()
        if label not in _LABEL_ALIASES:
            raise DatasetError(f"{csv_path}, line {line}: label must be real/fake (or 0/1); got {row.get('label')!r}.")
        raw = (row.get("path") or "").strip()
        if not raw:
            raise DatasetError(f"{csv_path}, line {line}: empty path.")
        path = Path(raw) if Path(raw).is_absolute() else csv_path.parent / raw
        group = (row.get("group") or "").strip() or label_name(_LABEL_ALIASES[label])
        samples.append(Sample(path, _LABEL_ALIASES[label], group))
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DatasetError(f"{csv_path}: {len(missing)} listed file(s) do not exist, for example {shown}.")
    return _without_repeats(samples, csv_path)


def _without_repeats(samples: list[Sample], csv_path: Path) -> list[Sample]:
    """``samples`` with each file once (the first row naming it); refuses a file under both labels."""
    first: dict[Path, Sample] = {}
    for sample in samples:
        seen = first.setdefault(sample.path.resolve(), sample)
        if seen.target != sample.target:
            raise DatasetError(
                f"{csv_path}: {sample.path} is listed both as {seen.label} and as {sample.label}; "
                "give each file one label."
            )
    repeats = len(samples) - len(first)
    if repeats:
        print(
            f"warning: {csv_path}: {repeats} row(s) repeat a file listed earlier; each file is used once.",
            file=sys.stderr,
        )
    return list(first.values())


def load_dataset(source: str | Path) -> list[Sample]:
    """A folder (scanned) or a ``.csv`` manifest (read)."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_manifest(source)
    return scan_folder(source)


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 42
) -> tuple[list[Sample], list[Sample]]:
    """Split keeping each (label, group) stratum's share in both parts; reproducible by seed.

    The validation part gets ``round(n * val_fraction)`` samples in all, shared out among
    strata by largest remainder (so many small groups do not inflate it), and at least one
    sample of each class when the class has two or more.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InvalidArgumentError(f"val_fraction must lie strictly between 0 and 1; got {val_fraction!r}.")
    rng = np.random.default_rng(seed)
    strata: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        strata.setdefault((s.target, s.group), []).append(s)
    keys = sorted(strata)
    exact = np.array([len(strata[k]) * val_fraction for k in keys])
    n_val = np.floor(exact).astype(int)
    short = int(round(len(samples) * val_fraction)) - int(n_val.sum())
    for i in np.argsort(-(exact - n_val), kind="stable")[: max(short, 0)]:
        n_val[i] += 1
    for target in (0, 1):
        members = [i for i, k in enumerate(keys) if k[0] == target]
        size = sum(len(strata[keys[i]]) for i in members)
        if members and size >= 2 and n_val[members].sum() == 0:
            n_val[max(members, key=lambda i: len(strata[keys[i]]))] += 1
    train, val = [], []
    for key, count in zip(keys, n_val):
        items = strata[key]
        order = rng.permutation(len(items))
        val.extend(items[i] for i in order[:count])
        train.extend(items[i] for i in order[count:])
    return train, val


def class_counts(samples: list[Sample]) -> dict[str, int]:
    """``{"real": n, "fake": m}``."""
    fake = sum(s.target for s in samples)
    return {LABEL_REAL: len(samples) - fake, LABEL_FAKE: fake}
