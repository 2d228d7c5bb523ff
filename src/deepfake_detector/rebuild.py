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

import json
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .faces.crop import CropSpec

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


def read_recipe(path: str | Path) -> Recipe:
    """The three tables of a rebuild recipe, with unknown keys refused."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: unreadable recipe ({exc}).") from exc
    steps: dict[str, Any] = {}
    for name, kind in (("data", DataStep), ("calibrate", CalibrateStep), ("bundle", BundleStep)):
        table = raw.get(name, {})
        unknown = sorted(set(table) - set(kind.__dataclass_fields__))
        if unknown:
            raise InvalidArgumentError(f"{path}: unknown key(s) {unknown} in [{name}].")
        steps[name] = kind(**table)
    if not isinstance(raw.get("train"), dict):
        raise InvalidArgumentError(f"{path}: a recipe needs a [train] table.")
    return Recipe(steps["data"], steps["calibrate"], steps["bundle"], dict(raw["train"]))


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
    from .threshold import check_reencode, choose_band, choose_threshold

    config, model = load_bundle(bundle)
    detector = Detector(config, model)
    samples = load_dataset(val_manifest)
    y, p, groups, _ = score_samples(detector, samples, faces="off", desc="calibrate")
    threshold = choose_threshold(y, p, max_fpr=step.max_fpr)
    band = choose_band(p, threshold, step.uncertain_share)
    config.threshold = threshold
    check_reencode(step.reencode)
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
    from .training import TrainConfig, train

    recipe = read_recipe(recipe_path)
    step = recipe.data
    data_root = Path(data or step.root)
    work_dir = Path(work or step.work)
    if not data_root.is_dir():
        raise InvalidArgumentError(f"{data_root}: no such data folder (give --data).")
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    crops = crop_sets(step, data_root, work_dir)
    manifests = write_parts(step, data_root, crops, work_dir)
    cfg = TrainConfig.create(
        **{
            **recipe.train,
            "data": str(manifests["train"]),
            "val_dir": str(manifests["val"]),
            "out": str(work_dir / "bundle"),
        }
    )
    bundle = train(cfg, resume=True)
    calibrate(bundle, manifests["val"], recipe.calibrate, recipe.bundle)
    export_onnx(bundle)
    if do_install:
        _log(f"[install] {install(bundle)}")
    _log(f"[done] {bundle} in {(time.perf_counter() - started) / 60:.1f} min; test part: {manifests['test']}")
    return bundle
