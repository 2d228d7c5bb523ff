"""Throughput of batch scoring: local ``predict`` against ``predict --engine ray`` on one machine.

Scores the same face crops (default: ../shared/data/ffpp_faces, FaceForensics++ crops of
299x299 px, taken evenly across its folders) with the shipped detector, or ``--model``:

- locally, ``Detector.predict_many`` in this process with 1 and with 2 decoding threads;
- on Ray, ``score_on_ray`` on a local Ray instance with 1 actor of 2 CPUs and with 2 actors
  of 1 CPU each (an actor uses as many decoding and onnxruntime threads as it has CPUs).

Crops are scored whole (``--faces off``, as ``evaluate --faces off`` scores a folder of crops),
and every file is read once beforehand so that no run pays the disk. Prints one Markdown table:
wall time end to end (model loading, and for Ray starting the instance and the actors,
included), images per second end to end and in the steady state (from the first result to
the last), and the largest difference in p_fake from the local run; then the overhead of Ray
against local at equal threads (1 actor of 2 CPUs against 2 decoding threads).

    python benchmarks/scale.py [--data DIR] [--limit 1200] [--model BUNDLE] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from deepfake_detector import Detector
from deepfake_detector.media.files import images_below
from deepfake_detector.ray_engine import read_results, score_on_ray

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ffpp_faces"


def spread(paths: list[Path], limit: int) -> list[str]:
    """``limit`` paths taken evenly over the sorted list (so every folder is represented)."""
    if len(paths) <= limit:
        return [str(p) for p in paths]
    step = len(paths) / limit
    return [str(paths[int(i * step)]) for i in range(limit)]


def run_local(paths: list[str], model: str | None, workers: int, batch_size: int, faces: str) -> dict[str, Any]:
    started = time.perf_counter()
    detector = Detector.load(model)
    loaded = time.perf_counter()
    scores, arrivals = {}, []
    for pred in detector.predict_many(paths, batch_size=batch_size, workers=workers, faces=faces):
        arrivals.append(time.perf_counter())
        scores[pred.path] = pred.p_fake
    ended = time.perf_counter()
    return {
        "name": f"local, {workers} decoding thread{'s' * (workers > 1)}",
        "workers": workers,
        "wall_s": ended - started,
        "load_s": loaded - started,
        "startup_s": arrivals[0] - started if arrivals else float("nan"),
        "steady_ips": steady(arrivals, batch_size),
        "scores": scores,
        "runtime": detector.runtime,
    }


def run_ray(paths: list[str], model: str | None, actors: int, cpus: int, batch_size: int, faces: str) -> dict[str, Any]:
    """Each actor reserves ``cpus`` CPUs and uses as many decoding and onnxruntime threads."""
    arrivals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scale-") as out:
        started = time.perf_counter()
        run = score_on_ray(
            paths,
            out,
            model=model,
            actors=actors,
            cpus_per_actor=float(cpus),
            batch_size=batch_size,
            predict_options={"faces": faces},
            progress=False,
            on_row=lambda row: arrivals.append(time.perf_counter()),
        )
        ended = time.perf_counter()
        scores = {row["path"]: row["p_fake"] for row in read_results(out)}
    assert run.scored + run.failed == len(paths), run
    return {
        "name": f"Ray, {actors} actor{'s' * (actors > 1)} of {cpus} CPU{'s' * (cpus > 1)}",
        "workers": actors * cpus,
        "wall_s": ended - started,
        "startup_s": arrivals[0] - started if arrivals else float("nan"),
        "steady_ips": steady(arrivals, batch_size),
        "scores": scores,
    }


def steady(arrivals: list[float], batch_size: int) -> float:
    """Images per second after the first batch's results: the rows that arrived after it,
    over the time from its last row to the last row."""
    if len(arrivals) <= batch_size:
        return float("nan")
    span = arrivals[-1] - arrivals[batch_size - 1]
    return (len(arrivals) - batch_size) / span if span > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of face crops (any depth)")
    ap.add_argument("--limit", type=int, default=1200, help="crops to score (default 1200)")
    ap.add_argument("--model", help="bundle folder (default: the shipped detector)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--faces", choices=["auto", "off", "only"], default="off")
    ap.add_argument("--json", help="also write the measurements here")
    args = ap.parse_args()

    paths = spread(images_below(args.data), args.limit)
    if not paths:
        raise SystemExit(f"no images below {args.data}")
    megabytes = sum(Path(p).stat().st_size for p in paths) / 1e6
    for p in paths:  # into the page cache: no run pays the disk
        Path(p).read_bytes()
    load_before = os.getloadavg()

    runs = [
        run_local(paths, args.model, 1, args.batch_size, args.faces),
        run_local(paths, args.model, 2, args.batch_size, args.faces),
        run_ray(paths, args.model, 1, 2, args.batch_size, args.faces),
        run_ray(paths, args.model, 2, 1, args.batch_size, args.faces),
    ]
    reference = runs[0]["scores"]
    n = len(paths)
    print(
        f"{n} face crops ({megabytes:.0f} MB) from {args.data}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; runtime {runs[0]['runtime']}; batch size {args.batch_size}; "
        f"faces {args.faces}; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n"
    )
    print("| run | wall s | images/s end to end | images/s steady | first result after s | max abs Δp_fake vs local |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        diff = max(
            abs(run["scores"][p] - reference[p])
            for p in paths
            if run["scores"].get(p) is not None and reference[p] is not None
        )
        run["max_diff"] = diff
        print(
            f"| {run['name']} | {run['wall_s']:.1f} | {n / run['wall_s']:.1f} | {run['steady_ips']:.1f} "
            f"| {run['startup_s']:.1f} | {diff:.1e} |"
        )
    local, ray1 = runs[1], runs[2]
    print(
        f"\nRay against local at equal threads (1 actor of 2 CPUs, 2 decoding threads): end to end "
        f"{ray1['wall_s'] / local['wall_s']:.2f}x the time ({ray1['wall_s'] - local['wall_s']:+.1f} s), "
        f"steady state {local['steady_ips'] / ray1['steady_ips']:.2f}x the time per image."
    )
    if args.json:
        for run in runs:
            run.pop("scores")
        Path(args.json).write_text(json.dumps({"n": n, "load_before": load_before, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
