"""Video-level scores and the speed of the whole video pipeline.

Runs ``Detector.predict_many`` over a folder of videos laid out as ``real/<group>/*`` and
``fake/<group>/*`` (default: ../shared/data/videos), then prints one Markdown table with
the ROC AUC of the video verdicts overall and per fake group (against all real videos),
and the pipeline's throughput: sampled frames per second and video seconds per wall
second, decoding, face detection, tracking and scoring included.

    python benchmarks/video.py --model BUNDLE [--data DIR] [--max-frames 16] [--faces auto]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deepfake_detector import Detector
from deepfake_detector.data.dataset import scan_folder
from deepfake_detector.media.video import FrameSampling
from deepfake_detector.metrics import compute_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="bundle folder")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"))
    ap.add_argument("--max-frames", type=int, default=16)
    ap.add_argument("--faces", choices=["auto", "off", "only"], default="auto")
    ap.add_argument("--face-detector", default="auto")
    ap.add_argument("--json", help="also write the per-video results here")
    args = ap.parse_args()

    det = Detector.load(args.model, face_detector=args.face_detector)
    samples = scan_folder(args.data, videos=True)
    sampling = FrameSampling(max_frames=args.max_frames)
    started = time.perf_counter()
    preds = list(det.predict_many([str(s.path) for s in samples], faces=args.faces, sampling=sampling))
    wall = time.perf_counter() - started

    ok = [(s, p) for s, p in zip(samples, preds) if p.ok and p.p_fake is not None]
    failed = [p for p in preds if not p.ok]
    frames = sum(p.video.frames_sampled for p in preds if p.video is not None)
    video_seconds = sum(p.video.duration or 0.0 for p in preds if p.video is not None)
    y = np.array([s.target for s, _ in ok])
    p = np.array([pred.p_fake for _, pred in ok])
    m = compute_metrics(y, p, det.threshold, [s.group for s, _ in ok])

    print(
        f"model {args.model} ({det.summary()['input']}), faces={args.faces}, "
        f"face detector {args.face_detector}, at most {args.max_frames} frames per video\n"
    )
    print("| videos | judged | failed | ROC AUC | accuracy | frames | frames/s | video s per wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    auc = "n/a" if m["roc_auc_score"] is None else f"{m['roc_auc_score']:.3f}"
    print(
        f"| {len(samples)} | {len(ok)} | {len(failed)} | {auc} | {m['accuracy_score']:.3f} | {frames} | "
        f"{frames / wall:.1f} | {video_seconds / wall:.2f} |"
    )
    print("\n| group | n | mean p_fake | ROC AUC vs all real |")
    print("|---|---:|---:|---:|")
    for group, g in m["per_group"].items():
        vs = g["roc_auc_score_vs_real"]
        print(f"| {group} | {g['n']} | {g['mean_p_fake']:.3f} | {'n/a' if vs is None else f'{vs:.3f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps([pr.to_dict() for pr in preds], indent=1))


if __name__ == "__main__":
    main()
