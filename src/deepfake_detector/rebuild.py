"""Rebuild the shipped detector from the research sets, in one command.

    deepfake-detector rebuild --recipe recipes/default.toml [--data ../shared/data] [--install]

The recipe's ``[data]`` table names the sets and the face crop, ``[train]`` the training
run, ``[calibrate]`` how the decision rule is chosen on validation data. The steps:

1. crop the faces of every set with the crop prediction uses (a set already cropped with
   the same crop is kept, so an interrupted rebuild resumes);
2. split sources into train, validation and test, held out by source
   (:mod:`deepfake_detector.data.held_out`) and write one manifest per part;
3. train on the train part, picking the best epoch on the validation part;
4. calibrate on the validation part: the threshold (balanced accuracy, with the share of
   reals called fake bounded), the uncertain band and the re-encode check;
5. export the network to ONNX (``BUNDLE/onnx``), which the CPU runs several times faster
   (skipped, with a message, when the ``onnx`` package is not installed);
6. with ``--install``, copy the bundle to the package's ``weights/default``.

The test part is left for ``benchmarks/quality.py``.
"""

from __future__ import annotations

import difflib
import json
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .checks import is_seed
from .errors import DatasetError, DeepfakeDetectorError, InvalidArgumentError, UnknownModelError
from .faces.crop import CropSpec
from .media.files import make_folder

if TYPE_CHECKING:
    from .training import TrainConfig

DEFAULT_SETS = ("ffpp_faces", "stylegan_faces", "diffusion_faces", "yonsei_faces", "face_photos")
DONE_FILE = "crops.done"


@dataclass
class DataStep:
    """The recipe's ``[data]`` table."""

    root: str = "../shared/data"
    sets: list[str] = field(default_factory=lambda: list(DEFAULT_SETS))
    work: str = "runs/rebuild"
    crop_margin: float = 0.15
    face_detector: str = "mtcnn"
    seed: int = 42


@dataclass
class CalibrateStep:
    """The recipe's ``[calibrate]`` table: see :func:`~deepfake_detector.threshold.choose_threshold`
    and :func:`~deepfake_detector.threshold.choose_band`."""

    max_fpr: float | None = 0.05
    uncertain_share: float = 0.1
    reencode: dict[str, Any] | None = None


@dataclass
class BundleStep:
    """The recipe's ``[bundle]`` table: the name the detector reports and what it was
    trained on, under which terms (shown by ``predict``'s summary and the web page)."""

    name: str = "default"
    trained_on: str = ""
    terms: str = ""


@dataclass
class Recipe:
    data: DataStep
    calibrate: CalibrateStep
    bundle: BundleStep
    train: dict[str, Any]


# What the rebuild sets in [train] itself; a recipe value there would be silently overridden
# (data, val_dir, out) or would record a crop other than the one made (crop_margin).
_SET_BY_REBUILD = {
    "data": "the rebuild trains on WORK/train.csv",
    "val_dir": "the rebuild validates on WORK/val.csv",
    "out": "the rebuild writes the bundle to WORK/bundle",
    "crop_margin": "the crop is [data] crop_margin",
}


def read_recipe(path: str | Path) -> Recipe:
    """The four tables of a rebuild recipe, every key and value checked now, so that a mistake
    is named before hours of cropping and training rather than after."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: unreadable recipe ({exc}).") from exc
    try:
        return _check_recipe(raw)
    except DeepfakeDetectorError as exc:
        raise InvalidArgumentError(f"{path}: {exc}") from exc


def _check_recipe(raw: dict[str, Any]) -> Recipe:
    """The recipe in ``raw``; errors name the table and key, the caller adds the file."""
    _refuse_unknown("at the top level", raw, ("bundle", "calibrate", "data", "train"), "table")
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise InvalidArgumentError(f"[{name}] must be a table; got {table!r}.")
    if "train" not in raw:
        raise InvalidArgumentError("a recipe needs a [train] table.")
    recipe = Recipe(
        _data_step(raw.get("data", {})),
        _calibrate_step(raw.get("calibrate", {})),
        _bundle_step(raw.get("bundle", {})),
        dict(raw["train"]),
    )
    train_config(recipe.train)
    return recipe


def _refuse_unknown(where: str, table: dict[str, Any], known: Iterable[str], what: str = "key") -> None:
    """Refuse a name the recipe does not use: a typo (``max_fp``) ignored would quietly give
    a detector built with the default instead."""
    names = sorted(known)
    unknown = sorted(set(table) - set(names))
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, names, n=1)]
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InvalidArgumentError(f"unknown {what}(s) {unknown} {where}.{hint} Known: {', '.join(names)}.")


def _data_step(table: dict[str, Any]) -> DataStep:
    """The ``[data]`` table, checked: what crop_sets and write_parts would otherwise trip on late."""
    from .faces import list_face_detectors

    _refuse_unknown("in [data]", table, DataStep.__dataclass_fields__)
    step = DataStep(**table)
    for key in ("root", "work", "face_detector"):
        value = getattr(step, key)
        if not isinstance(value, str) or not value:
            raise InvalidArgumentError(f"[data] {key} must be non-empty text; got {value!r}.")
    sets = step.sets
    if not isinstance(sets, list) or not sets:
        raise InvalidArgumentError(f"[data] sets must be a non-empty list of set folder names; got {sets!r}.")
    for name in sets:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise InvalidArgumentError(f"[data] sets must hold folder names under the data root; got {name!r}.")
    twice = sorted({name for name in sets if sets.count(name) > 1})
    if twice:
        raise InvalidArgumentError(f"[data] sets names {twice} more than once.")
    detectors = ["auto", *list_face_detectors()]
    if step.face_detector not in detectors:
        raise InvalidArgumentError(f"[data] face_detector must be one of {detectors}; got {step.face_detector!r}.")
    try:
        step.crop_margin = CropSpec(margin=step.crop_margin).margin
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"[data] crop_margin: {exc}") from exc
    seed = step.seed
    if not is_seed(seed):
        raise InvalidArgumentError(f"[data] seed must be a whole number from 0 to 2**32 - 1; got {seed!r}.")
    step.sets = list(sets)
    return step


def check_calibrate_step(step: CalibrateStep) -> None:
    """Refuse a bad calibration rule before any scoring, and before the bundle is touched."""
    from .threshold import check_max_fpr, check_reencode, check_uncertain_share

    check_max_fpr(step.max_fpr)
    check_uncertain_share(step.uncertain_share)
    check_reencode(step.reencode)


def _calibrate_step(table: dict[str, Any]) -> CalibrateStep:
    """The ``[calibrate]`` table, checked: otherwise a bad value surfaces only after training."""
    _refuse_unknown("in [calibrate]", table, CalibrateStep.__dataclass_fields__)
    step = CalibrateStep(**table)
    try:
        check_calibrate_step(step)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"[calibrate] {exc}") from exc
    return step


def _bundle_step(table: dict[str, Any]) -> BundleStep:
    """The ``[bundle]`` table, checked: its texts go into the bundle's config as they are."""
    _refuse_unknown("in [bundle]", table, BundleStep.__dataclass_fields__)
    step = BundleStep(**table)
    if not isinstance(step.name, str) or not step.name:
        raise InvalidArgumentError(f"[bundle] name must be non-empty text; got {step.name!r}.")
    for key in ("trained_on", "terms"):
        if not isinstance(getattr(step, key), str):
            raise InvalidArgumentError(f"[bundle] {key} must be text; got {getattr(step, key)!r}.")
    return step


def train_config(table: dict[str, Any], work: Path = Path("WORK")) -> TrainConfig:
    """The TrainConfig the rebuild trains with in ``work``, resolved once here so that an unknown
    option, a wrong type or an unknown architecture is named before any cropping."""
    from .training import TrainConfig

    taken = sorted(set(table) & set(_SET_BY_REBUILD))
    if taken:
        reasons = "; ".join(f"{key}: {_SET_BY_REBUILD[key]}" for key in taken)
        raise InvalidArgumentError(f"[train] {taken} cannot be set in a rebuild recipe ({reasons}).")
    try:
        cfg = TrainConfig.create(
            **table, data=str(work / "train.csv"), val_dir=str(work / "val.csv"), out=str(work / "bundle")
        )
        cfg.resolved()
    except UnknownModelError as exc:
        raise InvalidArgumentError(f"[train] arch: {exc}") from exc
    except DeepfakeDetectorError as exc:
        raise InvalidArgumentError(f"[train] {exc}") from exc
    return cfg


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _source_folder(data_root: Path, set_name: str, work: Path) -> Path:
    """The folder ``crop-faces`` reads for one set. face_photos has no real/ folder (every photo
    is real), so it is seen through a tree of links under ``real/``; nothing is copied."""
    from .data.held_out import FACE_PHOTO_FOLDERS, FACE_PHOTOS

    if set_name != FACE_PHOTOS:
        return data_root / set_name
    links = work / "sources" / FACE_PHOTOS
    for folder in FACE_PHOTO_FOLDERS:
        src = data_root / FACE_PHOTOS / folder
        if not src.is_dir():
            continue
        for path in sorted(src.rglob("*")):
            if path.is_file():
                link = links / "real" / folder / path.relative_to(src)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(path.resolve())
    return links


def crop_sets(step: DataStep, data_root: Path, work: Path) -> Path:
    """Face crops of every set under ``work/crops``; returns that folder."""
    from .face_crops import CROP_FILE, crop_faces_dataset

    spec = CropSpec(margin=step.crop_margin)
    crops = work / "crops"
    for set_name in step.sets:
        dst = crops / set_name
        done = dst / DONE_FILE
        if done.is_file() and json.loads(done.read_text()) == spec.to_dict():
            _log(f"[crop] {set_name}: already cropped, kept")
            continue
        if dst.exists():
            shutil.rmtree(dst)
        started = time.perf_counter()
        report = crop_faces_dataset(
            _source_folder(data_root, set_name, work), dst, spec, face_detector=step.face_detector
        )
        done.write_text(json.dumps(spec.to_dict()))
        _log(
            f"[crop] {set_name}: {report.crops} crops from {report.files} files "
            f"({report.without_faces} without a usable face, {report.failed} failed) "
            f"in {time.perf_counter() - started:.0f} s"
        )
    shutil.copyfile(crops / step.sets[0] / CROP_FILE, work / CROP_FILE)  # train reads the crop beside its manifest
    return crops


def write_parts(step: DataStep, data_root: Path, crops: Path, work: Path) -> dict[str, Path]:
    """``work/{train,val,test}.csv``: the crops of each part's sources."""
    from .data.held_out import PARTS, crops_of, split_sources, write_manifest

    split = split_sources(data_root, step.sets, seed=step.seed)
    manifests = {}
    for part in PARTS:
        samples = [c for s in split.parts[part] for c in crops_of(s, data_root, crops)]
        manifests[part] = write_manifest(samples, work / f"{part}.csv")
        fakes = sum(s.target for s in samples)
        _log(f"[split] {part}: {len(split.parts[part])} source files -> {len(samples)} crops ({fakes} fake)")
    return manifests


def calibrate(
    bundle: str | Path, val_manifest: str | Path, step: CalibrateStep, about: BundleStep | None = None
) -> dict[str, Any]:
    """Choose the threshold and the uncertain rule on validation crops and write them, with the
    bundle's name and provenance, into the bundle."""
    from .bundle import load_bundle, save_bundle
    from .data.dataset import load_dataset
    from .detector import Detector
    from .evaluation import score_samples
    from .metrics import compute_metrics
    from .threshold import choose_band, choose_threshold

    check_calibrate_step(step)
    config, model = load_bundle(bundle)
    detector = Detector(config, model)
    samples = load_dataset(val_manifest)
    y, p, groups, errors = score_samples(detector, samples, faces="off", desc="calibrate")
    for message in errors:
        _log(f"warning: not scored: {message}")
    _check_validation_scores(val_manifest, y, len(samples))
    threshold = choose_threshold(y, p, max_fpr=step.max_fpr)
    band = choose_band(p, threshold, step.uncertain_share)
    config.threshold = threshold
    config.uncertain = {"band": band, "reencode": step.reencode}
    provenance = {}
    if about is not None:
        config.name = about.name
        provenance = {"trained_on": about.trained_on, "terms": about.terms}
    metrics = compute_metrics(y, p, threshold, groups)
    config.metrics = {**config.metrics, "validation": metrics}
    config.training = {
        **config.training,
        **provenance,
        "calibration": {
            "val_data": str(val_manifest),
            "rule": f"balanced accuracy with at most {step.max_fpr} of validation reals called fake"
            if step.max_fpr is not None
            else "balanced accuracy",
            "uncertain_share": step.uncertain_share,
        },
    }
    save_bundle(bundle, config, model)
    _log(
        f"[calibrate] threshold {threshold:.4f}, uncertain band ±{band:.4f}, validation ROC AUC "
        f"{metrics['roc_auc_score']:.4f}"
    )
    return {"threshold": threshold, "band": band, "metrics": metrics}


def _check_validation_scores(val: str | Path, y: Any, n_images: int) -> None:
    """Refuse validation scores that cannot choose a threshold, before the bundle is written:
    with one class, balanced accuracy and ROC AUC are undefined and the threshold would be a
    silent 0.5."""
    if len(y) == 0:
        raise DatasetError(
            f"{val}: none of its {n_images} validation images could be scored, so there is nothing to calibrate on."
        )
    fakes = int(sum(y))
    reals = len(y) - fakes
    if not reals or not fakes:
        raise DatasetError(
            f"{val}: calibration needs both real and fake validation images; of its {n_images} images, "
            f"{len(y)} could be scored: {reals} real, {fakes} fake."
        )


def export_onnx(bundle: Path) -> Path | None:
    """The bundle's ONNX export (what ``Detector.load`` runs on CPUs), or None without the onnx package."""
    from .errors import MissingDependencyError
    from .export import export_bundle

    try:
        out = export_bundle(bundle)
    except MissingDependencyError as exc:
        _log(f"[export] skipped: {exc}")
        return None
    _log(f"[export] {out}")
    return out


def install(bundle: Path) -> Path:
    """Copy the bundle into the package, where :func:`~deepfake_detector.shipped.default_model_dir` finds it."""
    from .bundle import replace_folder
    from .export import ONNX_DIR
    from .shipped import DEFAULT_MODEL, WEIGHTS_DIR

    def fill(tmp: Path) -> None:
        for item in Path(bundle).iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
            elif item.name == ONNX_DIR:
                shutil.copytree(item, tmp / item.name)

    return replace_folder(WEIGHTS_DIR / DEFAULT_MODEL, fill, lambda name: True)


def rebuild(
    recipe_path: str | Path, *, data: str | None = None, work: str | None = None, do_install: bool = False
) -> Path:
    """Run every step of a recipe; returns the calibrated bundle's folder."""
    from .training import train

    recipe = read_recipe(recipe_path)
    step = recipe.data
    data_root = Path(data or step.root)
    work_dir = Path(work or step.work)
    if not data_root.is_dir():
        raise InvalidArgumentError(f"{data_root}: no such data folder (give --data).")
    missing = [name for name in step.sets if not (data_root / name).is_dir()]
    if missing:
        raise DatasetError(f"{data_root}: no folder for set(s) {missing}, named in {recipe_path} [data] sets.")
    make_folder(work_dir, "the rebuild's work folder ([data] work or --work)")
    started = time.perf_counter()
    crops = crop_sets(step, data_root, work_dir)
    manifests = write_parts(step, data_root, crops, work_dir)
    bundle = train(train_config(recipe.train, work_dir), resume=True)
    calibrate(bundle, manifests["val"], recipe.calibrate, recipe.bundle)
    export_onnx(bundle)
    if do_install:
        _log(f"[install] {install(bundle)}")
    _log(f"[done] {bundle} in {(time.perf_counter() - started) / 60:.1f} min; test part: {manifests['test']}")
    return bundle
