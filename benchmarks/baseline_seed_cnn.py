"""The baseline: the prototype's recipe on the shared data, scored on held-out parts.

Trains seed-cnn exactly as the prototype did (128x128, pixels / 255, Adam 1e-3, 10 epochs,
no augmentation) on the training part of every labelled set in ../shared/data, then scores
the held-out part of each set as-is and laundered (both classes shrunk to at most 512 px
and re-saved as JPEG q80), and prints one Markdown table.

Held-out parts: ffpp_faces by its source split (file-name prefix train__/test__, a split by
video); the other sets (one person per image) by a stratified 80/20 split with seed 42.
The checkpoint is picked on a stratified 20% of the training part.

    python benchmarks/baseline_seed_cnn.py [--data ../shared/data] [--work benchmarks/output/baseline]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from deepfake_detector import Detector
from deepfake_detector.data.dataset import Sample, scan_folder, stratified_split
from deepfake_detector.evaluation import score_samples
from deepfake_detector.metrics import compute_metrics
from deepfake_detector.training import TrainConfig, train

SETS = ("ffpp_faces", "stylegan_faces", "diffusion_faces", "yonsei_faces")


def split_set(root: Path) -> tuple[list[Sample], list[Sample]]:
    samples = scan_folder(root)
    if root.name == "ffpp_faces":
        train_part = [s for s in samples if s.path.name.startswith("train__")]
        test_part = [s for s in samples if s.path.name.startswith("test__")]
        return train_part, test_part
    return stratified_split(samples, 0.2, 42)


def write_manifest(samples: list[Sample], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for s in samples:
            w.writerow([str(s.path.resolve()), s.label, s.group])


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--work", default="benchmarks/output/baseline")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    train_all: list[Sample] = []
    tests: dict[str, list[Sample]] = {}
    for name in SETS:
        tr, te = split_set(data / name)
        train_all += [Sample(s.path, s.target, f"{name}/{s.group}") for s in tr]
        tests[name] = te
    manifest = work / "train.csv"
    write_manifest(train_all, manifest)

    started = time.perf_counter()
    bundle = train(
        TrainConfig(
            data=str(manifest),
            out=str(work / "seed-cnn"),
            arch="seed-cnn",
            epochs=args.epochs,
            augment="none",
            optimizer="adam",
            lr=1e-3,
            patience=0,
        )
    )
    train_seconds = time.perf_counter() - started
    det = Detector.load(bundle)

    rows = []
    for name, samples in tests.items():
        row = {"set": name, "n": len(samples)}
        for variant, launder in (("as_is", False), ("laundered", True)):
            y, p, groups, errors = score_samples(det, samples, launder=launder, progress=False)
            m = compute_metrics(y, p, det.threshold, groups)
            row[f"{variant}_roc_auc_score"] = m["roc_auc_score"]
            row[f"{variant}_accuracy_score"] = m["accuracy_score"]
            row[f"{variant}_balanced_accuracy_score"] = m["balanced_accuracy_score"]
            row[f"{variant}_failed"] = len(errors)
        rows.append(row)

    lines = [
        f"seed-cnn, prototype recipe, {args.epochs} epochs, trained in {train_seconds / 60:.1f} min on "
        f"{len(train_all)} images; threshold {det.threshold:.3f} (chosen on validation).",
        "",
        "| held-out set | n | ROC AUC | accuracy | balanced acc. "
        "| ROC AUC laundered | accuracy laundered | balanced acc. laundered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['n']} | {fmt(r['as_is_roc_auc_score'])} | {fmt(r['as_is_accuracy_score'])} | "
            f"{fmt(r['as_is_balanced_accuracy_score'])} | {fmt(r['laundered_roc_auc_score'])} | "
            f"{fmt(r['laundered_accuracy_score'])} | {fmt(r['laundered_balanced_accuracy_score'])} |"
        )
    table = "\n".join(lines)
    print(table)
    (work / "baseline.md").write_text(table + "\n")
    (work / "baseline.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
