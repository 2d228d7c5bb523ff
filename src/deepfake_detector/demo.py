"""The Quick start's main job, until a shipped detector exists.

Generates a small real/fake image set, trains ``seed-cnn`` on it, evaluates the result on
a second generated set it never saw, and predicts on a few of those images: the whole
train -> evaluate -> predict path in about a minute on a laptop CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .data.synthetic import make_synthetic_dataset
from .detector import Detector
from .evaluation import evaluate
from .training import TrainConfig, train


def run_demo(out_dir: str | Path = "demo-output", *, epochs: int = 6) -> Path:
    """Run the demo in ``out_dir``; returns the trained bundle's path."""
    out = Path(out_dir)
    print(f"1/4 generating images in {out}/train and {out}/test", file=sys.stderr)
    train_dir = make_synthetic_dataset(out / "train", n_per_class=100, size=128, seed=0)
    test_dir = make_synthetic_dataset(out / "test", n_per_class=40, size=128, seed=1)
    print("2/4 training seed-cnn", file=sys.stderr)
    bundle = train(TrainConfig(data=str(train_dir), out=str(out / "model"), arch="seed-cnn", epochs=epochs))
    print("3/4 evaluating on unseen images", file=sys.stderr)
    result = evaluate(bundle, test_dir, out / "report", launder=True)
    for section in result["sections"]:
        m = section["metrics"]
        print(
            f"    {section['name']:<10} accuracy {m['accuracy_score']:.3f}  ROC AUC {m['roc_auc_score']:.3f}",
            file=sys.stderr,
        )
    print("4/4 predicting", file=sys.stderr)
    detector = Detector.load(bundle)
    samples = (
        sorted((test_dir / "real" / "scenes").glob("*.png"))[:3]
        + sorted((test_dir / "fake" / "checkerboard").glob("*.png"))[:3]
    )
    for pred in detector.predict_many(samples):
        print(f"    {Path(pred.path).name:<16} {pred.label:<5} p_fake {pred.p_fake:.3f}  {pred.seconds * 1000:.1f} ms")
    print(f"Done. Model: {bundle}  Report: {result['report']}", file=sys.stderr)
    return bundle
