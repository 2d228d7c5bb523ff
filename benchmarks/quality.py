"""Quality of one or more detectors on data they did not train on, as-is and laundered.

For each research set below --data, the test part of its split by source
(deepfake_detector.data.held_out: the part `deepfake-detector rebuild` leaves out of
training and validation) is judged picture by picture, the way a user's photo is: faces found,
cropped and scored, the bundle's decision rule applied (threshold, uncertain band,
re-encode check). `videos` (never trained on) is judged clip by clip, and every --folder
(a real/fake folder or a CSV manifest) whole. Each picture set is scored twice: as it is, and
laundered (both classes shrunk to at most 512 px and saved as JPEG quality 80), which takes
format and size shortcuts away.

Printed: one markdown table per model, a row per set and per group, with ROC AUC and AP
(each fake group against all reals of its set), and over the row's own pictures: accuracy at
the bundle's threshold, the share of verdicts given as uncertain, the share of reals called
fake at the threshold (FPR) and under the full rule (uncertain verdicts do not count as
fake), and the same two shares over the scored faces of the real pictures (a group photo
counts each of its faces; a picture judged whole, with no face found, counts once). A
comparison table of every model's laundered ROC AUC per row follows.

    python benchmarks/quality.py --model runs/rebuild/bundle --model runs/seed-cnn \\
        [--data ../shared/data] [--folder MORE_DATA] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from deepfake_detector.data.dataset import Sample, load_dataset, scan_folder
from deepfake_detector.data.held_out import split_sources
from deepfake_detector.detector import Detector
from deepfake_detector.evaluation import LAUNDER_MAX_SIDE, LAUNDER_QUALITY
from deepfake_detector.media.image import launder as launder_image
from deepfake_detector.media.image import load_image
from deepfake_detector.media.video import FrameSampling
from deepfake_detector.results import LABEL_FAKE, LABEL_UNCERTAIN

PICTURE_SETS = ["ffpp_faces", "stylegan_faces", "diffusion_faces", "yonsei_faces", "face_photos"]
VIDEO_SET = "videos"


def _laundered(path: Path) -> np.ndarray:
    return launder_image(load_image(path), max_side=LAUNDER_MAX_SIDE, quality=LAUNDER_QUALITY)


def judge(detector: Detector, samples: list[Sample], launder: bool, max_frames: int) -> list[dict]:
    """One row per sample with a verdict: target, group, p_fake, label, and each scored face's
    (p_fake, label) (the picture's own when it was judged whole)."""
    rows = []
    sampling = FrameSampling(max_frames=max_frames)
    preds = detector.predict_many(
        [s.path for s in samples], loader=_laundered if launder else load_image, sampling=sampling
    )
    for sample, pred in zip(samples, preds):
        if pred.ok and pred.p_fake is not None:
            faces = [(f.p_fake, f.label) for f in pred.faces if f.p_fake is not None] or [(pred.p_fake, pred.label)]
            verdict = {"p_fake": pred.p_fake, "label": pred.label, "faces": faces}
            rows.append({"target": sample.target, "group": sample.group, **verdict})
        else:
            print(f"  not judged: {pred.error or pred.note}", file=sys.stderr)
    return rows


def _scores(rows: list[dict], reals: list[dict], threshold: float) -> dict:
    """Scores of ``rows``; ROC AUC and AP rank them together with ``reals`` (the set's reals),
    so a fake group is measured against every real of its set."""
    y = np.array([r["target"] for r in rows], int)
    p = np.array([r["p_fake"] for r in rows], float)
    labels = np.array([r["label"] for r in rows])
    own = {id(r) for r in rows}
    ranked = rows + [r for r in reals if id(r) not in own]
    y_all = np.array([r["target"] for r in ranked], int)
    p_all = np.array([r["p_fake"] for r in ranked], float)
    both = 0 < y_all.sum() < len(y_all)
    own_reals = y == 0
    real_faces = [face for r in rows if r["target"] == 0 for face in r["faces"]]
    face_p = np.array([p for p, _ in real_faces], float)
    face_labels = np.array([label for _, label in real_faces])
    return {
        "n": len(rows),
        "roc_auc": float(roc_auc_score(y_all, p_all)) if both and y.any() else None,
        "ap": float(average_precision_score(y_all, p_all)) if both and y.any() else None,
        "accuracy": float(np.mean((p >= threshold) == y)) if len(y) else None,
        "uncertain": float(np.mean(labels == LABEL_UNCERTAIN)) if len(y) else None,
        "fpr": float(np.mean(p[own_reals] >= threshold)) if own_reals.any() else None,
        "reals_called_fake": float(np.mean(labels[own_reals] == LABEL_FAKE)) if own_reals.any() else None,
        "real_faces": len(real_faces),
        "face_fpr": float(np.mean(face_p >= threshold)) if real_faces else None,
        "real_faces_called_fake": float(np.mean(face_labels == LABEL_FAKE)) if real_faces else None,
    }


def table_rows(set_name: str, rows: list[dict], threshold: float) -> list[dict]:
    """The set's row, then one per group (n, accuracy and shares over the group's own items)."""
    reals = [r for r in rows if r["target"] == 0]
    out = [{"set": set_name, "group": "all", **_scores(rows, reals, threshold)}]
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        out.append({"set": set_name, "group": group.split("/", 1)[-1], **_scores(mine, reals, threshold)})
    return out


def _fmt(v: float | int | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def print_table(name: str, results: list[dict]) -> None:
    print(f"\n### {name}\n")
    print(
        "| set | group | variant | n | ROC AUC | AP | accuracy | uncertain | reals called fake (threshold) | (rule) "
        "| real faces | real faces called fake (threshold) | (rule) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['set']} | {r['group']} | {r['variant']} | {r['n']} | {_fmt(r['roc_auc'])} | {_fmt(r['ap'])} | "
            f"{_fmt(r['accuracy'])} | {_fmt(r['uncertain'], True)} | {_fmt(r['fpr'], True)} | "
            f"{_fmt(r['reals_called_fake'], True)} | {r['real_faces'] or '-'} | {_fmt(r['face_fpr'], True)} | "
            f"{_fmt(r['real_faces_called_fake'], True)} |"
        )


def print_comparison(everything: dict[str, list[dict]]) -> None:
    """ROC AUC as-is / laundered, and reals called fake under the full rule, model beside model."""
    models = list(everything)
    keyed = {m: {(r["set"], r["group"], r["variant"]): r for r in rows} for m, rows in everything.items()}
    first = everything[models[0]]
    print("\n### Side by side: ROC AUC as-is / laundered; reals called fake (rule)\n")
    print("| set | group | " + " | ".join(Path(m).name for m in models) + " |")
    print("|---|---|" + "---:|" * len(models))
    for r in first:
        if r["variant"] != "as-is":
            continue
        cells = []
        for m in models:
            mine = keyed[m].get((r["set"], r["group"], "as-is"), {})
            washed = keyed[m].get((r["set"], r["group"], "laundered"))
            auc = _fmt(mine.get("roc_auc")) + (f" / {_fmt(washed['roc_auc'])}" if washed else "")
            cells.append(auc if mine.get("roc_auc") is not None else _fmt(mine.get("reals_called_fake"), True))
        print(f"| {r['set']} | {r['group']} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="bundle or ensemble folder (repeatable)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", nargs="*", default=PICTURE_SETS + [VIDEO_SET], help="research sets to score")
    ap.add_argument("--folder", action="append", default=[], help="more labelled data, scored whole (repeatable)")
    ap.add_argument("--max-frames", type=int, default=8, help="frames judged per video (default 8)")
    ap.add_argument("--seed", type=int, default=42, help="the split's seed (as in the rebuild recipe)")
    ap.add_argument("--json", help="also write every row to this JSON file")
    args = ap.parse_args()

    data = Path(args.data)
    picture_sets = [s for s in args.sets if s != VIDEO_SET]
    test = split_sources(data, picture_sets, seed=args.seed).parts["test"] if picture_sets else []
    plan: list[tuple[str, list[Sample], bool]] = [
        (name, [s for s in test if s.group.startswith(f"{name}/")], True) for name in picture_sets
    ]
    if VIDEO_SET in args.sets:
        plan.append((VIDEO_SET, scan_folder(data / VIDEO_SET, videos=True), False))
    plan += [(Path(folder).name, load_dataset(folder), True) for folder in args.folder]

    everything = {}
    for model in args.model:
        detector = Detector.load(model)
        results = []
        for set_name, samples, can_launder in plan:
            for variant in ("as-is", "laundered") if can_launder else ("as-is",):
                started = time.perf_counter()
                rows = judge(detector, samples, variant == "laundered", args.max_frames)
                results += [{**r, "variant": variant} for r in table_rows(set_name, rows, detector.threshold)]
                seconds = time.perf_counter() - started
                print(f"{detector.name}: {set_name} {variant}: {len(rows)} judged in {seconds:.0f} s", file=sys.stderr)
        everything[model] = results
        print_table(f"{detector.name} ({model}), threshold {detector.threshold:.3f}", results)
    if len(everything) > 1:
        print_comparison(everything)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
