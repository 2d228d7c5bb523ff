"""The Quick start's main job: the shipped detector on the user's pictures, or on samples.

With no pictures given, two samples are made offline: scikit-image's astronaut photo (a
real photograph, NASA, public domain) and a self-blended fake of it (its face blended with
a slightly changed copy of itself, the kind of seam a face swap leaves). Each verdict is
printed and each picture is saved with its face boxes and scores drawn on it.

``train_demo`` keeps the older path that needs no shipped detector: it trains a small
model on generated pictures, evaluates it on unseen ones and predicts with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .detector import Detector
from .results import Prediction

SAMPLE_SEED = 7


def sample_images(out_dir: str | Path) -> list[Path]:
    """Write ``astronaut.png`` (real) and ``astronaut_self_blended.png`` (fake) to ``out_dir``."""
    from skimage import data

    from .data.self_blend import self_blend
    from .faces import create_face_detector
    from .faces.crop import CropSpec, crop_box

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real = np.ascontiguousarray(data.astronaut()[..., :3])
    face = max(create_face_detector("auto").detect(real), key=lambda b: b.w * b.h)
    x0, y0, x1, y1 = crop_box(face, real.shape[:2], CropSpec(margin=0.15))
    points = [(x - x0, y - y0) for x, y in face.landmarks or []]
    inside = points and all(0 <= x < x1 - x0 and 0 <= y < y1 - y0 for x, y in points)
    blended, _ = self_blend(
        real[y0:y1, x0:x1], np.random.default_rng(SAMPLE_SEED), landmarks=points if inside else None
    )
    fake = real.copy()
    fake[y0:y1, x0:x1] = blended
    paths = [out / "astronaut.png", out / "astronaut_self_blended.png"]
    for path, pixels in zip(paths, (real, fake)):
        Image.fromarray(pixels).save(path)
    return paths


def run_demo(
    images: list[str] | None = None, out_dir: str | Path = "demo-output", model: str | None = None
) -> list[Prediction]:
    """Judge ``images`` (or the two samples) with the shipped detector (or ``model``)."""
    from .annotate import annotated_pictures

    out = Path(out_dir)
    detector = Detector.load(model)
    print(f"Model: {detector.name} (threshold {detector.threshold:.3f})", file=sys.stderr)
    if not images:
        print(
            f"No pictures given: judging two samples made in {out}/ (a real photo and a self-blended fake of it)",
            file=sys.stderr,
        )
        images = [str(p) for p in sample_images(out)]
    out.mkdir(parents=True, exist_ok=True)
    preds = []
    for pred in detector.predict_many(images, keep_media=True):
        name = Path(pred.path or "").name
        if not pred.ok:
            print(f"  {name:<32} error: {pred.error}")
        else:
            print(
                f"  {name:<32} {pred.label:<9} p_fake {pred.p_fake:.3f}  "
                f"faces {len(pred.faces or [])}  {pred.seconds:.2f} s"
            )
            for part, picture in annotated_pictures(pred):
                picture.save(out / f"{Path(name).stem}_{part}_verdict.jpg", quality=90)
        pred.artifacts = None  # the pixels are drawn: do not hold every picture until the end
        preds.append(pred)
    print(f"Pictures with their verdicts drawn on them: {out}/*_verdict.jpg", file=sys.stderr)
    return preds


def train_demo(out_dir: str | Path = "demo-output", *, epochs: int = 6) -> Path:
    """Train, evaluate and use a small model on generated pictures; returns the bundle's path."""
    from .data.synthetic import make_synthetic_dataset
    from .evaluation import evaluate
    from .training import TrainConfig, train

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
