"""How fast the detector runs on this machine, against what the machine allows.

For each model (default: the shipped detector and, with --seed-cnn, the prototype's CNN),
in one run and on one machine:

* ceiling: the exported graph in onnxruntime on random input (batches of --batch-size),
  with the intra-op threads the Detector uses: the most images per second this machine
  gives this model; the graph takes resized uint8 pixels and normalises them itself, so
  the same is measured for the bare network alone (a float-input export of it, made here),
  and the same network in PyTorch eager mode with as many threads;
* folder: ``Detector.predict_many`` on --n-crops face crops with faces off (decode, resize,
  batch, score), its images per second and its ratio to each ceiling, each the median of
  --rounds alternating measurements; once with the re-encoding check off (one model input
  per image, the like-for-like comparison) and once with the bundle's own rule (each image
  also scored as its re-encoded copies);
* photos: ``predict_many`` on --n-photos full photographs with face detection;
* latency: ``Detector.predict`` on one 1-megapixel JPEG file, faces off, decoding included,
  p50 and p99 over --repeats calls; and the same request through the running REST service
  (``deepfake-detector serve`` on 127.0.0.1, one client), with what the service adds at p50;
* peak memory: the largest resident set of the process that measured that model;
* FLOPs: the network's floating-point operations per image (PyTorch's FlopCounterMode),
  beside the machine's measured float32 matrix-multiply GFLOP/s, and the images per second
  those two would allow.

Each model is measured in its own child process, so its peak memory is its own. Models
without an ONNX export are exported into a temporary copy first. Run on a quiet machine:

    python benchmarks/speed.py --crops ../shared/data/ffpp_faces --photos ../shared/data/face_photos \\
        --seed-cnn runs/seed-cnn

Prints a markdown table; --json writes the numbers too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_detector.detector import Detector
from deepfake_detector.export import ONNX_DIR, OnnxRunner, export_bundle, find_onnx, network_to_onnx
from deepfake_detector.media.files import images_below
from deepfake_detector.shipped import default_model_dir

SEED = 0


def spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` of ``paths`` taken evenly over the sorted list, so every subfolder is represented."""
    if len(paths) <= n:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The machine's float32 matrix-multiply speed through PyTorch (MKL/oneDNN), all threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_image(bundle: Path) -> float:
    """Floating-point operations of one forward pass at the bundle's input size (2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepfake_detector.bundle import load_bundle

    config, model = load_bundle(bundle)
    size = config.preprocessing.input_size
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def with_export(bundle: Path, scratch: Path) -> Path:
    """The bundle itself when it holds a current ONNX export that takes pixel planes (as this
    version exports), else a freshly exported copy in ``scratch``."""
    if find_onnx(bundle) is not None:
        loaded = Detector.load(bundle)
        planes = loaded.runtime == "onnx" and loaded.model.session.get_inputs()[0].shape[1] == 3
        if planes and loaded.model.takes_pixels:
            return bundle
    copy = Path(shutil.copytree(bundle, scratch / bundle.name, ignore=shutil.ignore_patterns(ONNX_DIR)))
    export_bundle(copy)
    return copy


def bare_network(bundle: Path, threads: int) -> Any:
    """The bundle's network alone (float ``(N, 3, S, S)`` input, no input step) in onnxruntime."""
    import torch

    from deepfake_detector.bundle import load_bundle

    config, model = load_bundle(bundle)
    size = config.preprocessing.input_size
    return OnnxRunner(network_to_onnx(model.eval(), torch.zeros(2, 3, size, size), bundle), threads)


def ceiling(network: Any, size: int, batch: int, seconds: float = 5.0) -> float:
    """Images per second of a model (onnxruntime's runner or a torch module) on random batches
    of what it takes: uint8 pixel planes for a graph with the input step inside, else float planes."""
    import torch

    rng = np.random.default_rng(SEED)
    if getattr(network, "takes_pixels", False):
        x = torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
    else:
        x = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    with torch.inference_mode():
        network(x)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            network(x)
            done += batch
    return done / (time.perf_counter() - started)


def torch_eager(bundle: Path, batch: int, threads: int) -> float:
    """The same network in PyTorch eager mode with as many threads as onnxruntime gets."""
    import torch

    from deepfake_detector.bundle import load_bundle

    config, model = load_bundle(bundle)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return ceiling(model.eval(), config.preprocessing.input_size, batch)
    finally:
        torch.set_num_threads(before)


def folder_speed(detector: Detector, paths: list[Path], batch: int, **options: Any) -> tuple[float, int]:
    """Images per second of predict_many over ``paths`` (after one warm-up batch), and failures."""
    list(detector.predict_many(paths[:batch], batch_size=batch, **options))
    started = time.perf_counter()
    failed = sum(not p.ok for p in detector.predict_many(paths, batch_size=batch, **options))
    return len(paths) / (time.perf_counter() - started), failed


def megapixel_jpeg(folder: Path) -> Path:
    """A 1-megapixel JPEG photo of a person (scikit-image's astronaut, enlarged), quality 90."""
    from PIL import Image
    from skimage import data

    path = folder / "astronaut_1mp.jpg"
    Image.fromarray(data.astronaut()).resize((1000, 1000), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def library_latency(detector: Detector, path: Path, repeats: int, **options: Any) -> list[float]:
    for _ in range(5):
        detector.predict(path, **options)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.predict(path, **options)
        times.append(time.perf_counter() - started)
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_latency(bundle: Path, path: Path, repeats: int, query: str) -> list[float]:
    """Round trips of one upload to ``deepfake-detector serve`` on loopback, one client."""
    import httpx

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "deepfake_detector", "serve", "--model", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the service did not get ready")
                time.sleep(0.2)
            data = path.read_bytes()
            files = {"file": (path.name, data, "image/jpeg")}
            for _ in range(5):
                client.post(f"/v1/predict?{query}", files=files).raise_for_status()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                client.post(f"/v1/predict?{query}", files=files).raise_for_status()
                times.append(time.perf_counter() - started)
            return times
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def measure(bundle: Path, crops: list[Path], photos: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Every number for one model; run in a child process."""
    with tempfile.TemporaryDirectory() as scratch:
        exported = with_export(bundle, Path(scratch))
        detector = Detector.load(exported)
        assert detector.runtime == "onnx", detector.runtime
        size = detector.preprocessing.input_size
        out: dict[str, Any] = {"model": detector.name, "arch": detector.config.arch, "input_size": size}
        # Ceiling and folder alternate over --rounds, so that a slow spell of the machine hits
        # both; the ratio is the median of the rounds' ratios.
        threads = detector.model.session.get_session_options().intra_op_num_threads
        bare = bare_network(bundle, threads)
        ceilings, bares, folders = [], [], []
        for _ in range(args.rounds):
            ceilings.append(ceiling(detector.model, size, args.batch_size, seconds=3.0))
            bares.append(ceiling(bare, size, args.batch_size, seconds=3.0))
            speed, out["folder_failed"] = folder_speed(
                detector, crops, args.batch_size, faces="off", reencode_check=False
            )
            folders.append(speed)
        out["ceiling"], out["bare"], out["folder"] = (float(np.median(v)) for v in (ceilings, bares, folders))
        for key, tops in (("ratio", ceilings), ("bare_ratio", bares)):
            ratios = np.asarray(folders) / np.asarray(tops)
            out[key], out[f"{key}_range"] = float(np.median(ratios)), (float(ratios.min()), float(ratios.max()))
        out["torch"] = torch_eager(bundle, args.batch_size, threads)
        out["folder_rule"], _ = folder_speed(detector, crops, args.batch_size, faces="off")
        if photos:
            out["photos"], out["photos_failed"] = folder_speed(detector, photos, args.batch_size, faces="only")
        jpeg = megapixel_jpeg(Path(scratch))
        plain = {"faces": "off", "reencode_check": False}
        out["lib_p50"], out["lib_p99"] = percentiles(library_latency(detector, jpeg, args.repeats, **plain))
        out["lib_rule_p50"], out["lib_rule_p99"] = percentiles(
            library_latency(detector, jpeg, args.repeats, faces="off")
        )
        query = "faces=off&reencode_check=false"
        out["svc_p50"], out["svc_p99"] = percentiles(service_latency(exported, jpeg, args.repeats, query))
        out["flops"] = flops_per_image(bundle)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out


def _child(bundle: str, crops: list[Path], photos: list[Path], args: argparse.Namespace, queue: Any) -> None:
    try:
        queue.put(measure(Path(bundle), crops, photos, args))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def table(rows: list[dict[str, Any]], gflops: float) -> str:
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, float32 matrix multiply {gflops:.0f} GFLOP/s (PyTorch, 2048x2048).",
        "",
        "| | " + " | ".join(f"{r['model']} ({r['arch']}, {r['input_size']} px)" for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in rows) + " |")

    row(
        "ceiling: exported graph (uint8 pixels in), onnxruntime, random batches (img/s)",
        lambda r: f"{r['ceiling']:.0f}",
    )
    row("bare network alone (float input), onnxruntime, random batches (img/s)", lambda r: f"{r['bare']:.0f}")
    row("same network, PyTorch eager, same threads (img/s)", lambda r: f"{r['torch']:.0f}")
    row("folder of face crops, faces off, re-encode check off (img/s)", lambda r: f"{r['folder']:.0f}")
    row(
        "... ratio to the ceiling (median of the rounds; their range)",
        lambda r: f"{r['ratio']:.0%} ({r['ratio_range'][0]:.0%} to {r['ratio_range'][1]:.0%})",
    )
    row(
        "... ratio to the bare network (median of the rounds; their range)",
        lambda r: f"{r['bare_ratio']:.0%} ({r['bare_ratio_range'][0]:.0%} to {r['bare_ratio_range'][1]:.0%})",
    )
    row("folder of face crops, faces off, the bundle's rule (img/s)", lambda r: f"{r['folder_rule']:.0f}")
    row("full photos with face detection (img/s)", lambda r: f"{r['photos']:.1f}" if "photos" in r else "n/a")
    row("1-MP JPEG, library, p50 / p99 (ms)", lambda r: f"{r['lib_p50']:.1f} / {r['lib_p99']:.1f}")
    row(
        "1-MP JPEG, library, the bundle's rule, p50 / p99 (ms)",
        lambda r: f"{r['lib_rule_p50']:.1f} / {r['lib_rule_p99']:.1f}",
    )
    row("1-MP JPEG, through the service, p50 / p99 (ms)", lambda r: f"{r['svc_p50']:.1f} / {r['svc_p99']:.1f}")
    row("... added by the service at p50 (ms)", lambda r: f"{r['svc_p50'] - r['lib_p50']:.1f}")
    row("peak memory of the measuring process (MB)", lambda r: f"{r['peak_rss_mb']:.0f}")
    row("GFLOPs per image", lambda r: f"{r['flops'] / 1e9:.2f}")
    row("img/s the matmul speed would allow", lambda r: f"{gflops * 1e9 / r['flops']:.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="bundle folder (repeatable; default: the shipped detector)")
    ap.add_argument("--seed-cnn", help="a seed-cnn bundle (the prototype's CNN) to measure beside the others")
    ap.add_argument("--crops", default="../shared/data/ffpp_faces", help="folder of face crops")
    ap.add_argument("--n-crops", type=int, default=1000)
    ap.add_argument("--photos", default="../shared/data/face_photos", help="folder of photos with faces")
    ap.add_argument("--n-photos", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=200, help="calls per latency figure")
    ap.add_argument("--rounds", type=int, default=5, help="alternations of ceiling and folder runs")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)

    models = [Path(m) for m in args.model or [default_model_dir()]]
    if args.seed_cnn:
        models.append(Path(args.seed_cnn))
    crops = spread(images_below(args.crops), args.n_crops)
    photos = spread(images_below(args.photos), args.n_photos) if args.photos and Path(args.photos).is_dir() else []
    if len(crops) < args.n_crops:
        print(f"note: {len(crops)} crops found in {args.crops}", file=sys.stderr)
    gflops = matmul_gflops()
    context = multiprocessing.get_context("spawn")
    rows = []
    for bundle in models:
        queue = context.Queue()
        child = context.Process(target=_child, args=(str(bundle), crops, photos, args, queue))
        child.start()
        result = queue.get()
        child.join()
        if "error" in result:
            print(f"{bundle}: {result['error']}", file=sys.stderr)
            return 1
        print(f"{bundle}: done", file=sys.stderr)
        rows.append(result)
    print(table(rows, gflops))
    if args.json:
        Path(args.json).write_text(json.dumps({"gflops": gflops, "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
