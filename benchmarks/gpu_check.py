"""Checks that need a CUDA GPU, in one short run: the paths CPU machines (and CI) cannot take.

1. ``train`` on the GPU (mixed precision), and ``train --ddp`` through the NCCL backend (one
   process per GPU present);
2. ``Detector.load`` on the GPU: ``runtime="auto"`` takes PyTorch there, and the GPU's p_fake
   matches the CPU's;
3. the shipped network's images per second on the GPU (PyTorch eager, float32), bare and
   through ``predict_many`` on generated pictures with faces off.

    python benchmarks/gpu_check.py          # exits 1 if a check fails; prints what it measured
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepfake_detector import Detector
from deepfake_detector.bundle import read_config
from deepfake_detector.data.synthetic import make_synthetic_dataset, synthetic_image
from deepfake_detector.distributed import launch
from deepfake_detector.training import TrainConfig, train


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{f': {detail}' if detail else ''}", flush=True)
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}", flush=True)
    results = []
    tmp = Path(tempfile.mkdtemp())
    data = make_synthetic_dataset(tmp / "data", n_per_class=48, size=128, seed=0)
    config = {"data": str(data), "epochs": 3, "batch_size": 16, "workers": 2, "device": "cuda"}

    started = time.perf_counter()
    bundle = train(TrainConfig(out=str(tmp / "gpu"), **config), progress=False)
    training = read_config(bundle).training
    auc = read_config(bundle).metrics["validation"]["roc_auc_score"]
    results.append(
        check(
            "train on the GPU",
            training["device"] == "cuda" and auc > 0.5,
            f"{time.perf_counter() - started:.1f} s, validation ROC AUC {auc:.3f}",
        )
    )

    nprocs = torch.cuda.device_count()
    launch(functools.partial(train, progress=False), nprocs, TrainConfig(out=str(tmp / "ddp"), **config), device="cuda")
    ddp = read_config(tmp / "ddp").training
    results.append(check(f"train --ddp {nprocs} (NCCL)", ddp["processes"] == nprocs and ddp["device"] == "cuda"))

    rng = np.random.default_rng(3)
    pictures = [synthetic_image(rng, 128, fake=bool(i % 2)) for i in range(16)]
    on_gpu = Detector.load(bundle, device="cuda")
    on_cpu = Detector.load(bundle, device="cpu", runtime="torch")
    gap = float(np.abs(on_gpu.score_batch(pictures) - on_cpu.score_batch(pictures)).max())
    on_torch = on_gpu.runtime == "torch" and on_gpu.device.type == "cuda"
    results.append(check("auto runtime on the GPU is PyTorch", on_torch))
    results.append(check("GPU p_fake matches the CPU's", gap < 1e-3, f"largest difference {gap:.2e}"))

    shipped = Detector.load(device="cuda")
    size = shipped.preprocessing.input_size
    x = torch.randn(64, 3, size, size, device="cuda")
    with torch.inference_mode():
        for _ in range(5):
            shipped.model(x)
        torch.cuda.synchronize()
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < 5:
            shipped.model(x)
            done += len(x)
        torch.cuda.synchronize()
    bare = done / (time.perf_counter() - started)
    images = [synthetic_image(rng, 299, fake=bool(i % 2)) for i in range(512)]
    list(shipped.predict_many(images[:64], faces="off", reencode_check=False, batch_size=64))
    started = time.perf_counter()
    list(shipped.predict_many(images, faces="off", reencode_check=False, batch_size=64))
    folder = len(images) / (time.perf_counter() - started)
    print(f"shipped network on the GPU: bare {bare:.0f} img/s; predict_many, faces off: {folder:.0f} img/s")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
