"""Training on several processes: DistributedDataParallel over gloo on this CPU matches one process.

The comparison uses a small network with neither dropout (whose masks are drawn per
process) nor batch norm (whose statistics are taken per process's share of the batch), so
the two runs must agree to rounding; seed-cnn is used where only the plumbing is checked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from deepfake_detector.bundle import load_bundle, read_config
from deepfake_detector.cli import main
from deepfake_detector.distributed import RankBatches, _error_line, global_batches, launch
from deepfake_detector.errors import InvalidArgumentError, TrainingError
from deepfake_detector.models import list_models, register_model
from deepfake_detector.training import TrainConfig, train

ARCH = "ddp-test-net"
if ARCH not in list_models():  # also imported by each spawned rank, which must know the name

    @register_model(ARCH, input_size=64, explain_layer="features.0", description="test only: no dropout, no norm")
    def _ddp_test_net(pretrained: bool = False, **kwargs: object) -> nn.Module:
        net = nn.Sequential()
        net.add_module("features", nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4)))
        net.add_module("head", nn.Sequential(nn.Flatten(), nn.Linear(128, 1)))
        return net


def _config(data: Path, out: Path, **overrides: object) -> TrainConfig:
    values = {"data": str(data), "out": str(out), "arch": ARCH, "epochs": 3, "batch_size": 12, "workers": 0}
    values["optimizer"], values["lr"] = "sgd", 0.01  # Adam's first steps would turn rounding noise into +-lr
    return TrainConfig.create(**{**values, **overrides})


def _train_quietly(config: TrainConfig) -> None:
    """What each rank runs (a module-level function, so spawned processes can import it)."""
    train(config, progress=False)


def test_global_batches_depend_on_the_seed_alone_and_ranks_split_them() -> None:
    batches = global_batches(50, 16, 7, drop_last=False)  # sizes 16, 16, 16, 2
    assert batches == global_batches(50, 16, 7, drop_last=False) != global_batches(50, 16, 8, drop_last=False)
    assert sorted(sum(batches, [])) == list(range(50)) and [len(b) for b in batches] == [16, 16, 16, 2]
    assert global_batches(50, 16, 7, drop_last=True) == batches[:3]
    shares = [list(RankBatches(batches, r, 3)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]  # the final batch of 2 cannot feed 3 ranks
    for i, batch in enumerate(batches[:3]):
        assert sum((s[i] for s in shares), []) == batch
        assert sorted(len(s[i]) for s in shares) == [5, 5, 6]
    assert RankBatches(batches, 0, 3).global_sizes == [16, 16, 16]
    assert list(RankBatches(batches, 0, 1)) == batches  # one process: every batch whole


def test_two_processes_match_one(synthetic_train: Path, tmp_path: Path) -> None:
    """Same global batch size: the loss curve and the weights agree to rounding, and only
    rank 0 writes the bundle."""
    one = train(_config(synthetic_train, tmp_path / "one"), progress=False)
    two = tmp_path / "two"
    launch(_train_quietly, 2, _config(synthetic_train, two))
    history_one = read_config(one).training["history"]
    history_two = read_config(two).training["history"]
    assert read_config(two).training["processes"] == 2 and read_config(one).training["processes"] == 1
    assert len(history_one) == len(history_two) == 3
    for a, b in zip(history_one, history_two):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_roc_auc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    _, net_one = load_bundle(one)
    _, net_two = load_bundle(two)
    for (name, a), b in zip(net_one.state_dict().items(), net_two.state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-5, err_msg=name)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_cli_train_ddp(synthetic_train: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seed"
    argv = ["train", str(synthetic_train), "--out", str(out), "--epochs", "1", "--batch-size", "16"]
    assert main([*argv, "--workers", "0", "--ddp", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert read_config(out).training["processes"] == 2


def test_torchrun_joins_its_processes(synthetic_train: Path, tmp_path: Path) -> None:
    """The documented launch: torchrun starts the ranks, `train --ddp` joins them."""
    out = tmp_path / "seed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", port, "-m", "deepfake_detector", "train", str(synthetic_train), "--out", str(out),
        "--epochs", "1", "--batch-size", "16", "--workers", "0", "--ddp", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [str(out)]  # rank 0 alone prints and writes
    assert read_config(out).training["processes"] == 2


def test_bad_process_counts_are_refused(synthetic_train: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="processes"):
        launch(_train_quietly, 0, _config(synthetic_train, tmp_path / "x"))
    with pytest.raises(TrainingError, match="at least the number of processes"):  # a rank's error, as a message
        launch(_train_quietly, 2, _config(synthetic_train, tmp_path / "z", batch_size=1))
    assert not (tmp_path / "z" / "config.json").exists()
    assert main(["train", str(synthetic_train), "--out", str(tmp_path / "y"), "--ddp", "0"]) == 1
    assert not (tmp_path / "y").exists()


def _share_from_rank0(out: str) -> None:
    """Each rank offers its own rank number; every rank must get rank 0's."""
    from deepfake_detector import distributed

    mine = {"rank": distributed.rank(), "points": np.full((5, 2), float(distributed.rank()))}
    shared = distributed.from_rank0(mine)
    Path(out, f"rank{distributed.rank()}.txt").write_text(f"{shared['rank']} {shared['points'].sum()}")


def test_from_rank0_gives_every_rank_rank_zeros_object(tmp_path: Path) -> None:
    launch(_share_from_rank0, 2, str(tmp_path))
    assert sorted(p.read_text() for p in tmp_path.glob("rank*.txt")) == ["0 0.0", "0 0.0"]


def test_more_gpu_processes_than_gpus_are_refused_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process takes its own GPU; a second process on a one-GPU machine failed with CUDA's
    "invalid device ordinal" and a line about device-side assertions as the message."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidArgumentError, match="2 processes need 2 GPUs, and this machine has 1"):
        launch(print, 2, device="auto")


def test_a_ranks_error_is_its_exception_line_not_the_hints_after_it() -> None:
    cuda = (
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
        '  File "train.py", line 3, in run\n    torch.cuda.set_device(gpu)\n'
        "torch.AcceleratorError: CUDA error: invalid device ordinal\n"
        "GPU device may be out of range, do you have enough GPUs?\n"
        "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
    )
    assert _error_line(cuda) == "torch.AcceleratorError: CUDA error: invalid device ordinal"
    chained = (
        'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: first\n\n'
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "b.py", line 2\nTrainingError: the last one\n'
    )
    assert _error_line(chained) == "TrainingError: the last one"
