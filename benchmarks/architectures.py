"""Architectures compared on the same face crops, held out by source.

Trains each entry below on the train part that `deepfake-detector rebuild` wrote
(WORK/train.csv), picks its best epoch and threshold on the validation part (WORK/val.csv),
and scores the test part (WORK/test.csv) crop by crop, as-is and laundered. Every entry's threshold is
chosen on its validation scores by the shipped rule (the recipe's [calibrate] max_fpr). Entries differ in
architecture and starting point; the recipe is the shipped one's (augmentation, self-blended
fakes, optimiser, schedule, epochs) except where an entry says otherwise: the prototype's CNN
keeps the prototype's own recipe (no augmentation, 128 px).

    python benchmarks/architectures.py --work runs/rebuild --out benchmarks/output/architectures

A finished entry's bundle is kept and not retrained, so the script resumes; results of
earlier runs (OUT/results.json) stay in the table, so entries can be run one at a time
with --only (and, for a costly entry, fewer --epochs, which the table's settings record).
Prints a markdown table: ROC AUC on all test crops and per fake group (each against all
test reals), the laundered AUC, and the share of test reals called fake at the threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from deepfake_detector.bundle import CONFIG_FILE
from deepfake_detector.data.dataset import load_dataset
from deepfake_detector.detector import Detector
from deepfake_detector.evaluation import score_samples
from deepfake_detector.models import count_parameters
from deepfake_detector.rebuild import read_recipe
from deepfake_detector.threshold import choose_threshold
from deepfake_detector.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]

ENTRIES = {
    "seed-cnn (prototype recipe)": {"arch": "seed-cnn", "self_blend": 0.0, "imagenet_init": False, "lr": None},
    "mobilenetv2_100, ImageNet start": {"arch": "mobilenetv2_100", "imagenet_init": True},
    "efficientnet_lite0, ImageNet start": {"arch": "efficientnet_lite0", "imagenet_init": True},
    "resnet18, from scratch": {"arch": "resnet18", "imagenet_init": False, "lr": 1e-3},
    "npr-resnet (forensic), from scratch": {"arch": "npr-resnet", "imagenet_init": False, "lr": 1e-3},
}
GROUPS = [
    ("DF", "ffpp_faces/Deepfakes"),
    ("F2F", "ffpp_faces/Face2Face"),
    ("FS", "ffpp_faces/FaceSwap"),
    ("NT", "ffpp_faces/NeuralTextures"),
    ("SD2.1", "diffusion_faces/sd21_sdfd"),
    ("SG2", "stylegan_faces/stylegan2_tpdne"),
    ("SG3", "stylegan_faces/stylegan3_r_ffhq"),
    ("Yonsei", "yonsei_faces/"),
]


def group_aucs(y: np.ndarray, p: np.ndarray, groups: list[str]) -> dict[str, float | None]:
    """ROC AUC of each fake group (a prefix of the group name) against all reals."""
    g = np.array(groups)
    reals = y == 0
    out: dict[str, float | None] = {}
    for short, prefix in GROUPS:
        fakes = (y == 1) & np.char.startswith(g, prefix)
        out[short] = float(roc_auc_score(np.r_[y[reals], y[fakes]], np.r_[p[reals], p[fakes]])) if fakes.any() else None
    return out


def run_entry(
    name: str, overrides: dict, recipe_train: dict, work: Path, out: Path, epochs: int | None, max_fpr: float | None
) -> dict:
    slug = overrides["arch"]
    bundle = out / slug
    settings = {**recipe_train, **{k: v for k, v in overrides.items() if v is not None}}
    for key, value in overrides.items():
        if value is None:
            settings.pop(key, None)
    if epochs:
        settings["epochs"] = epochs
    started = time.perf_counter()
    if not (bundle / CONFIG_FILE).is_file():
        cfg = TrainConfig.create(
            **settings, data=str(work / "train.csv"), val_dir=str(work / "val.csv"), out=str(bundle)
        )
        train(cfg, resume=True)
    detector = Detector.load(bundle)
    history = detector.config.training.get("history", [])
    y_val, p_val, _, _ = score_samples(detector, load_dataset(work / "val.csv"), faces="off", desc="validation")
    threshold = choose_threshold(y_val, p_val, max_fpr=max_fpr)
    test = load_dataset(work / "test.csv")
    row = {
        "entry": name,
        "parameters": count_parameters(detector.config.arch),
        "s_per_epoch": float(np.mean([h.get("seconds", np.nan) for h in history])) if history else None,
        "epochs_run": len(history),
        "val_auc": float(roc_auc_score(y_val, p_val)),
        "threshold": threshold,
        "settings": settings,
    }
    for variant, launder in (("as_is", False), ("laundered", True)):
        y, p, groups, _ = score_samples(detector, test, faces="off", launder=launder, desc=variant)
        row[f"auc_{variant}"] = float(roc_auc_score(y, p))
        if not launder:
            row["groups"] = group_aucs(y, p, groups)
            row["fpr"] = float(np.mean(p[y == 0] >= threshold))
    row["minutes"] = (time.perf_counter() - started) / 60
    return row


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the rebuild's working folder (train/val/test.csv)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "output" / "architectures"))
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "default.toml"))
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs for every entry")
    ap.add_argument("--only", nargs="*", help="entries whose name starts with one of these")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = read_recipe(args.recipe)
    results = out / "results.json"
    done = {r["entry"]: r for r in json.loads(results.read_text())} if results.is_file() else {}
    for name, overrides in ENTRIES.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        done[name] = run_entry(name, overrides, recipe.train, work, out, args.epochs, recipe.calibrate.max_fpr)
        results.write_text(json.dumps(list(done.values()), indent=2))
    rows = [done[name] for name in ENTRIES if name in done]  # every entry measured so far, in table order
    shorts = [s for s, _ in GROUPS]
    print(
        "| entry | parameters | epochs run | s/epoch | val AUC | test AUC | laundered | "
        + " | ".join(shorts)
        + " | reals called fake |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(shorts) + "---:|")
    for r in rows:
        groups = " | ".join(_f(r["groups"][s]) for s in shorts)
        s_epoch = "-" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.0f}"
        print(
            f"| {r['entry']} | {r['parameters']:,} | {r['epochs_run']} | {s_epoch} | {_f(r['val_auc'])} | "
            f"{_f(r['auc_as_is'])} | {_f(r['auc_laundered'])} | {groups} | {100 * r['fpr']:.1f} % |"
        )


if __name__ == "__main__":
    main()
