"""Training: data set in, model bundle out.

``train(TrainConfig(...))`` splits the data, trains with the augmentations and recipe the
architecture calls for, keeps the checkpoint with the best validation ROC AUC, stops early
when it stops improving, picks the threshold on validation data and writes a bundle.
An interrupted run continues with ``resume=True`` and ends with the same weights as an
uninterrupted one (same seed, CPU): every random draw is derived from (seed, epoch, index).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .bundle import BundleConfig, check_output_dir, p_fake_from_logits, save_bundle
from .checkpoint import load_checkpoint, remove_checkpoint, restore_checkpoint, save_checkpoint
from .checks import is_finite, is_seed, is_whole
from .data.augment import parse_augment
from .data.dataset import Sample, class_counts, load_dataset, scanned_as_data, stratified_split
from .data.self_blend import SelfBlendConfig, crop_landmarks
from .data.torch_dataset import ImageDataset, plain_errors
from .devices import pick_device
from .errors import DatasetError, DeepfakeDetectorError, InvalidArgumentError, TrainingError
from .face_crops import read_crop_record
from .faces.crop import CropSpec
from .media.image import probe_image
from .metrics import compute_metrics
from .models import IMAGENET_INITS, create_model, get_spec, load_imagenet_weights, load_init_weights
from .plots import plot_training_curves
from .preprocess import Preprocessing
from .threshold import choose_threshold, is_fake

EpochCallback = Callable[[int, dict[str, Any]], None]
_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("cosine", "constant")
# Changing one of these between an interrupted run and its resume would mix two runs.
# Settings that may change between an interrupted run and its resume; all others must match.
_FREE_ON_RESUME = ("out", "patience", "workers", "device")


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` means "the architecture's recipe default"."""

    data: str
    out: str
    arch: str = "seed-cnn"
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    augment: str | None = None
    val_dir: str | None = None
    val_fraction: float = 0.2
    seed: int = 42
    patience: int = 5
    pretrained: bool = False
    imagenet_init: bool = False
    init_weights: str | None = None
    workers: int | None = None
    device: str = "auto"
    crop_margin: float | None = None
    self_blend: float = 0.0
    self_blend_parts: float = 0.0

    @classmethod
    def create(cls, **values: Any) -> TrainConfig:
        """A config from keyword values, refusing unknown names and a missing data or out."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgumentError(f"Unknown training option(s) {unknown}; known: {sorted(known)}.")
        missing = [name for name in ("data", "out") if not values.get(name)]
        if missing:
            raise InvalidArgumentError(
                f"Training needs {' and '.join(missing)} (on the command line or in the recipe)."
            )
        for name, value in values.items():
            _check_type(name, value, _FIELD_TYPES[name])
        return cls(**values)

    @classmethod
    def from_recipe(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from the ``[train]`` table of a TOML recipe, with ``overrides`` winning.

        Paths in the recipe are taken as written (relative to the working folder), the way
        the same options on the command line are.
        """
        import tomllib

        path = Path(path)
        try:
            recipe = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgumentError(f"{path}: unreadable recipe ({exc}).") from exc
        table = recipe.get("train")
        if not isinstance(table, dict):
            raise InvalidArgumentError(f"{path}: a recipe needs a [train] table.")
        try:
            return cls.create(**{**table, **overrides})
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{path}: {exc}") from exc

    def resolved(self) -> TrainConfig:
        """A copy with recipe defaults filled in and every value checked."""
        values = asdict(self)
        for name, value in values.items():  # a TrainConfig made in code has not passed create()
            _check_type(name, value, _FIELD_TYPES[name])
        spec = get_spec(self.arch)
        recipe = {
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "optimizer": "adam",
            "schedule": "constant",
            "augment": "default",
            **spec.recipe,
        }
        for key, default in recipe.items():
            if values.get(key) is None:
                values[key] = default
        if values["workers"] is None:
            values["workers"] = min(2, os.cpu_count() or 1)
        cfg = TrainConfig(**values)
        if cfg.epochs < 1:
            raise InvalidArgumentError(f"epochs must be at least 1; got {cfg.epochs}.")
        if cfg.batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1; got {cfg.batch_size}.")
        if not cfg.lr > 0:
            raise InvalidArgumentError(f"lr must be positive; got {cfg.lr}.")
        if cfg.optimizer not in _OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer must be one of {_OPTIMIZERS}; got {cfg.optimizer!r}.")
        if cfg.schedule not in _SCHEDULES:
            raise InvalidArgumentError(f"schedule must be one of {_SCHEDULES}; got {cfg.schedule!r}.")
        if not 0.0 <= cfg.self_blend < 1.0:
            raise InvalidArgumentError(f"self_blend must lie in [0, 1); got {cfg.self_blend!r}.")
        if not 0.0 <= cfg.self_blend_parts <= 1.0:
            raise InvalidArgumentError(f"self_blend_parts must lie in [0, 1]; got {cfg.self_blend_parts!r}.")
        if cfg.self_blend_parts > 0 and cfg.self_blend == 0:
            raise InvalidArgumentError(
                "self_blend_parts shapes self-blended fakes, which self_blend turns on; "
                f"got self_blend_parts={cfg.self_blend_parts} with self_blend=0."
            )
        if cfg.patience < 0:
            raise InvalidArgumentError(f"patience must be 0 (off) or more; got {cfg.patience}.")
        if cfg.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay must be 0 or a positive number; got {cfg.weight_decay!r}.")
        if not 0.0 < cfg.val_fraction < 1.0:
            raise InvalidArgumentError(f"val_fraction must lie strictly between 0 and 1; got {cfg.val_fraction!r}.")
        if not is_seed(cfg.seed):
            raise InvalidArgumentError(f"seed must be a whole number from 0 to 2**32 - 1; got {cfg.seed}.")
        if cfg.crop_margin is not None and cfg.crop_margin < 0:
            raise InvalidArgumentError(f"crop_margin must be 0 or a positive number; got {cfg.crop_margin!r}.")
        parse_augment(cfg.augment)
        return cfg


# What each option must hold (a recipe is TOML, so anything can arrive), read from TrainConfig's
# own annotations ("int | None" -> int): int options take whole numbers, float options any finite
# number, str options text; None means "the default" for all.
_KINDS = {"int": int, "float": float, "str": str, "bool": bool}
_FIELD_TYPES: dict[str, type] = {f.name: _KINDS[str(f.type).split(" | ")[0]] for f in fields(TrainConfig)}


def _check_type(name: str, value: Any, kind: type) -> None:
    """Refuse a training option of the wrong kind, naming it, before it fails deep in a run."""
    if value is None:
        return
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = is_whole(value)
    elif kind is float:
        ok = is_finite(value)
    else:
        ok = isinstance(value, (str, os.PathLike))
    if not ok:
        words = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}
        raise InvalidArgumentError(f"{name} must be {words[kind]}; got {value!r}.")


def _crop_of(cfg: TrainConfig) -> tuple[CropSpec | None, str | None]:
    """How the training images were cut from their pictures, so inference crops alike:
    ``crop_margin`` when given, else the record ``crop-faces`` left in the data folder."""
    if cfg.crop_margin is not None:
        return CropSpec(margin=cfg.crop_margin), None
    return read_crop_record(cfg.data) or (None, None)


def _zero_head(model: nn.Module) -> None:
    """Start a pretrained backbone's new one-logit head at even odds (logit 0).

    A randomly initialised head on top of large pretrained features gives confident, wrong
    first predictions (a loss near 3 instead of 0.7) that the first epochs spend undoing.
    """
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)


def _real_landmarks(dataset: ImageDataset, progress: bool) -> dict[int, np.ndarray]:
    """MTCNN's five landmarks of each real training image, found once before training. With
    them every self-blend mask of that image follows its face (whole-face masks too, which
    without landmarks are ellipses around the crop centre), and face-part masks become
    possible; images where none is found keep the centred ellipse and are never part-blended."""
    from .faces import create_face_detector

    detector = create_face_detector("mtcnn")
    reals = [i for i, sample in enumerate(dataset.samples) if sample.target == 0]
    found: dict[int, np.ndarray] = {}
    for i in tqdm(reals, desc="landmarks", disable=not progress, leave=False):
        try:
            points = crop_landmarks(dataset.image(i), detector)
        except DeepfakeDetectorError:
            continue  # unreadable: the dataset skips it too
        if points is not None:
            found[i] = points
    _log(f"Self-blend landmarks: found in {len(found)} of {len(reals)} real training images.", progress)
    return found


def _readable(samples: list[Sample], progress: bool) -> list[Sample]:
    """The samples whose files open as images (header check); the others are reported and left out."""
    kept = []
    for sample in samples:
        try:
            probe_image(sample.path)
        except DeepfakeDetectorError as exc:
            _log(f"warning: leaving out {exc}", progress)
        else:
            kept.append(sample)
    return kept


def _check_out(cfg: TrainConfig) -> None:
    """Refuse an output folder that the next scan of the training or validation data folder
    would read (the data folder itself, or below its real/fake folders): the bundle's plot
    would become a training image."""
    for option, source in (("data", cfg.data), ("val_dir", cfg.val_dir)):
        if source and Path(source).is_dir() and scanned_as_data(cfg.out, source):
            raise InvalidArgumentError(
                f"out {cfg.out} lies where a scan of the {option} folder {source} reads images "
                "(the folder itself or its real/fake folders); choose an output folder elsewhere."
            )


def _refuse_shared(cfg: TrainConfig, train_s: list[Sample], val_s: list[Sample]) -> None:
    """Refuse validation data sharing files with the training data: the threshold and ROC AUC
    would be chosen on images the network learned."""
    train_paths = {s.path.resolve() for s in train_s}
    shared = [s.path for s in val_s if s.path.resolve() in train_paths]
    if shared:
        raise DatasetError(
            f"{cfg.val_dir}: {len(shared)} of its {len(val_s)} files are also training files of {cfg.data} "
            f"(for example {shared[0]}); validate on images training does not see."
        )


def _split(cfg: TrainConfig, progress: bool) -> tuple[list[Sample], list[Sample]]:
    """The training and validation samples: ``val_dir`` when given (refused when it shares files
    with ``data``), else a stratified share of ``data``; both parts need real and fake images."""
    samples = load_dataset(cfg.data)
    if cfg.val_dir:
        val_samples = load_dataset(cfg.val_dir)
        _refuse_shared(cfg, samples, val_samples)
        parts = (
            ("training", cfg.data, _readable(samples, progress)),
            ("validation", cfg.val_dir, _readable(val_samples, progress)),
        )
    else:
        train_s, val_s = stratified_split(_readable(samples, progress), cfg.val_fraction, cfg.seed)
        parts = (("training", cfg.data, train_s), ("validation", cfg.data, val_s))
    for name, source, part in parts:
        counts = class_counts(part)
        made_fakes = name == "training" and cfg.self_blend > 0 and counts["real"] > 0
        if min(counts.values()) == 0 and not made_fakes:
            raise DatasetError(f"{source}: the {name} part needs both real and fake images; it has {counts}.")
    return parts[0][2], parts[1][2]


def _check_decodable(dataset: ImageDataset, name: str, source: str) -> None:
    """Refuse, before any DataLoader worker starts, a part of the data of which no image decodes
    (the header check passes truncated files); the first decodable one usually comes at once."""
    problem = None
    for i in range(len(dataset)):
        try:
            dataset.image(i)
        except DeepfakeDetectorError as exc:
            problem = problem or exc
        else:
            return
    raise DatasetError(f"{source}: none of the {len(dataset)} {name} images can be decoded (first: {problem}).")


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


@torch.no_grad()
def _score(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets, logits and ``p_fake`` over a loader, in sample order.

    ``p_fake`` comes from the same function the Detector uses, so the threshold chosen on
    these scores splits them identically at prediction time.
    """
    model.eval()
    targets, logits = [], []
    for x, y, _ in plain_errors(loader):
        logits.append(model(x.to(device)).float().reshape(-1).cpu())
        targets.append(y)
    all_logits = torch.cat(logits)
    if not torch.isfinite(all_logits).all():
        raise TrainingError("Training diverged: the model's outputs are not finite; lower --lr.")
    p_fake = p_fake_from_logits(all_logits).numpy().astype(np.float64)
    return torch.cat(targets).numpy(), all_logits.numpy(), p_fake


def _log(message: str, progress: bool) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Train and write a bundle to ``config.out``; returns the bundle path.

    ``on_epoch_end(epoch, history_row)`` runs after each epoch's checkpoint is saved
    (tests use it to interrupt a run).

    Inside a process group of several ranks (see :mod:`deepfake_detector.distributed`),
    each rank trains on its share of every global batch of ``batch_size`` under
    DistributedDataParallel; every rank validates alike, so they stop together, and rank 0
    alone logs, checkpoints and writes the bundle.
    """
    from . import distributed

    world, main_rank = distributed.world_size(), distributed.rank() == 0
    progress = progress and main_rank
    cfg = config.resolved()
    _check_out(cfg)
    out = check_output_dir(cfg.out)
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())
    state = load_checkpoint(out) if resume else None
    if resume and state is None:
        _log(f"No interrupted run in {out}; starting from the beginning.", progress)
    if state is not None:
        saved = state["meta"]["config"]
        diffs = [
            f.name
            for f in fields(cfg)
            if f.name not in _FREE_ON_RESUME and saved.get(f.name, f.default) != getattr(cfg, f.name)
        ]
        if diffs:
            raise InvalidArgumentError(
                f"{out}: cannot resume with different settings ({', '.join(diffs)}); "
                "rerun with the original ones or without --resume."
            )

    spec = get_spec(cfg.arch)
    crop, face_detector = _crop_of(cfg)
    preprocessing = Preprocessing(spec.input_size, spec.mean, spec.std, crop=crop, face_detector=face_detector)
    augment_config = parse_augment(cfg.augment)
    train_s, val_s = _split(cfg, progress)
    counts = class_counts(train_s)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, pretrained=cfg.pretrained)
    if cfg.imagenet_init:
        loaded = load_imagenet_weights(model, cfg.arch)
        _log(f"ImageNet initialisation: {len(loaded)} tensors from {IMAGENET_INITS[cfg.arch]}", progress)
    if cfg.imagenet_init or cfg.pretrained:
        _zero_head(model)
    if cfg.init_weights:
        loaded, skipped = load_init_weights(model, cfg.init_weights)
        _log(
            f"Initial weights: {len(loaded)} tensors loaded, {len(skipped)} skipped, from {cfg.init_weights}", progress
        )
    model.to(device)
    distributed.check_world(cfg.batch_size)
    optimizer = _make_optimizer(cfg, model)
    # Weight the classes by what training will see: self-blending turns a share of reals into fakes.
    made = counts["real"] * cfg.self_blend
    pos_weight = torch.tensor([(counts["real"] - made) / (counts["fake"] + made)], device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    train_ds = ImageDataset(
        train_s,
        preprocessing,
        augment_config,
        cfg.seed,
        self_blend_p=cfg.self_blend,
        blend_config=SelfBlendConfig(part_p=cfg.self_blend_parts),
    )
    val_ds = ImageDataset(val_s, preprocessing)
    _check_decodable(train_ds, "training", cfg.data)
    _check_decodable(val_ds, "validation", cfg.val_dir or cfg.data)
    if cfg.self_blend_parts > 0:  # found once, by rank 0, and shared with the other ranks
        train_ds.landmarks = distributed.from_rank0(_real_landmarks(train_ds, progress) if main_rank else {})
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers)

    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch, bad_epochs, start_epoch = -math.inf, 0, 0, 0
    if state is not None:
        restore_checkpoint(state, model, optimizer)
        best_state = state["best"]
        meta = state["meta"]
        history, best_score, best_epoch = meta["history"], meta["best_score"], meta["best_epoch"]
        bad_epochs, start_epoch = meta["bad_epochs"], meta["epoch"]
        if meta.get("grad_scaler"):
            scaler.load_state_dict(meta["grad_scaler"])
        _log(f"Resuming {out} after epoch {start_epoch}.", progress)
    # Wrapped after any checkpoint is restored: DDP starts every rank from rank 0's weights.
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model  # what the training step runs

    _log(
        f"Training {cfg.arch} on {len(train_s)} images ({counts['real']} real, {counts['fake']} fake), "
        f"validating on {len(val_s)}, device {device.type}"
        f"{f', {world} processes' if world > 1 else ''}.",
        progress,
    )
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        torch.manual_seed(cfg.seed * 1000 + epoch)
        train_ds.set_epoch(epoch)
        # A batch of one breaks batch-norm statistics; networks without it see every sample.
        drop_last = batch_norm and len(train_ds) > cfg.batch_size
        # Every process of a distributed run takes its share of the same global batches.
        batches = distributed.global_batches(len(train_ds), cfg.batch_size, cfg.seed + epoch, drop_last)
        share = distributed.RankBatches(batches, distributed.rank(), world)
        loader = DataLoader(train_ds, batch_sampler=share, num_workers=cfg.workers)
        lr = _lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total_loss, total_correct, seen = 0.0, 0, 0
        bar = tqdm(
            plain_errors(loader),
            total=len(loader),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not progress,
            file=sys.stderr,
        )
        for step, (x, y, _) in enumerate(bar):
            x, yf = x.to(device), y.float().to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = net(x).reshape(-1)
                loss = loss_fn(logits.float(), yf)
            if not torch.isfinite(loss):
                raise TrainingError(f"Training diverged in epoch {epoch + 1}: the loss is {loss.item()}; lower --lr.")
            # DDP averages the ranks' gradients; weighting each rank's mean by its share of the
            # global batch makes that average the gradient of the global batch's mean loss.
            step_loss = loss * (len(y) * world / share.global_sizes[step]) if world > 1 else loss
            scaler.scale(step_loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(y)
            total_correct += int(
                (is_fake(p_fake_from_logits(logits.detach().cpu()).numpy(), 0.5) == y.numpy().astype(bool)).sum()
            )
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        total_loss, total_correct, seen = distributed.all_sum([total_loss, total_correct, seen])
        y_val, val_logits, p_val = _score(model, val_loader, device)
        val_loss = float(
            nn.functional.binary_cross_entropy_with_logits(
                torch.from_numpy(val_logits), torch.from_numpy(y_val).float()
            )
        )
        val_auc = compute_metrics(y_val, p_val, 0.5)["roc_auc_score"]
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": total_correct / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": float((is_fake(p_val, 0.5) == y_val.astype(bool)).mean()),
            "val_roc_auc": val_auc,
            "seconds": round(time.perf_counter() - started, 2),
        }
        history.append(row)
        score = val_auc if val_auc is not None else -val_loss
        improved = distributed.agree(score > best_score)
        if improved:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        _log(
            f"epoch {epoch + 1}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {row['train_accuracy']:.3f}  "
            f"val_loss {val_loss:.4f}  val_acc {row['val_accuracy']:.3f}  val_auc "
            f"{'n/a' if val_auc is None else f'{val_auc:.4f}'}  ({row['seconds']:.0f}s){'  *best' if improved else ''}",
            progress,
        )
        meta = {
            "config": asdict(cfg),
            "epoch": epoch + 1,
            "history": history,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "grad_scaler": scaler.state_dict() if amp else None,
        }
        if main_rank:
            save_checkpoint(out, model, best_state, optimizer, meta)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    if stopped_early:
        _log(f"Stopped early: no validation improvement for {cfg.patience} epochs.", progress)
    if best_state is None:
        raise TrainingError(f"{out}: no epoch finished, so there is no model to save.")
    if not main_rank:
        return out
    model.load_state_dict(best_state)
    model.eval()
    y_val, _, p_val = _score(model, val_loader, device)
    threshold = choose_threshold(y_val, p_val)
    val_metrics = compute_metrics(y_val, p_val, threshold, [s.group for s in val_s])

    from . import __version__

    bundle_config = BundleConfig(
        arch=cfg.arch,
        preprocessing=preprocessing,
        output="logit_fake",
        threshold=threshold,
        explain_layer=spec.explain_layer,
        name=out.name,
        training={
            "data": str(cfg.data),
            "val_data": str(cfg.val_dir)
            if cfg.val_dir
            else f"stratified {cfg.val_fraction:.0%} of data, seed {cfg.seed}",
            "n_train": len(train_s),
            "n_val": len(val_s),
            "class_counts": counts,
            "config": {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("out", "workers", "device")},
            "augment": augment_config.to_dict(),
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "stopped_early": stopped_early,
            "device": device.type,
            "processes": world,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "history": history,
        },
        metrics={"validation": val_metrics},
    )
    model.cpu()
    bundle = save_bundle(out, bundle_config, model)
    plot_training_curves(history, bundle / "training_curves.png")
    remove_checkpoint(bundle)
    _log(
        f"Saved {bundle} (best epoch {best_epoch}, validation ROC AUC "
        f"{val_metrics['roc_auc_score']:.4f}, threshold {threshold:.4f}).",
        progress,
    )
    return bundle
