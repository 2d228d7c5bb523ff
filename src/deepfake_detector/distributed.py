"""Training on several processes: PyTorch DistributedDataParallel, set up and torn down.

Two ways in, one training loop (:func:`deepfake_detector.training.train`, which sees the
process group and splits each batch):

* ``deepfake-detector train ... --ddp N`` starts N processes on this machine
  (:func:`launch`), talking over loopback;
* ``torchrun --nproc-per-node N [--nnodes ...] -m deepfake_detector train ... --ddp``:
  torchrun starts the processes and sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``; each one
  joins with :func:`init_from_env`.

The backend is gloo on CPUs and NCCL on GPUs. Every rank sees the same global batches as a
one-process run, which batches the same way (same shuffle, same augmentation draws, which
depend on the sample and epoch only), and takes its share of each (:class:`RankBatches`),
so the gradients, and hence the run, match a one-process run with the same global batch size.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import InvalidArgumentError, TrainingError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


def backend_for(device: str | torch.device) -> str:
    """NCCL for GPUs, gloo for CPUs."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def is_distributed() -> bool:
    """Whether this process is one rank of a process group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This rank's index on its own machine (which GPU it takes)."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher) set the variables a rank joins with."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


def init_from_env(device: str = "auto") -> None:
    """Join the process group torchrun describes in the environment (no-op if joined)."""
    if dist.is_initialized():
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    gpu = None
    if use_cuda:
        gpu = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if gpu.index >= torch.cuda.device_count():
            raise TrainingError(_too_few_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", gpu.index + 1))))
        torch.cuda.set_device(gpu)
    # Naming the GPU binds NCCL to it; without it every rank warns that it guesses the GPU from its rank.
    dist.init_process_group(backend_for("cuda" if use_cuda else "cpu"), init_method="env://", device_id=gpu)
    _share_cpu_threads(int(os.environ["WORLD_SIZE"]))


def _share_cpu_threads(world: int) -> None:
    """Split this machine's cores between the ranks on it, rather than each taking them all."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))))


def default_processes(device: str = "auto") -> int:
    """One process per GPU when training on GPUs, else 2."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2


def _too_few_gpus(nprocs: int) -> str:
    count = torch.cuda.device_count()
    return (
        f"Training on GPUs takes one GPU a process: {nprocs} processes need {nprocs} GPUs, and this machine "
        f"has {count}. Use at most {count} processes, or train on the CPU (device 'cpu')."
    )


def _error_line(traceback_text: str) -> str:
    """The failed rank's error, from the traceback text torch hands back: the first line at the
    left margin after the last "Traceback" header, where Python writes ``Type: message``.
    Later lines can belong to the message (CUDA's hints about device-side assertions, say)."""
    lines = traceback_text.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    for line in lines[starts[-1] + 1 if starts else 0 :]:
        if line.strip() and not line[0].isspace():
            return line
    return lines[-1] if lines else "(no message)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, device: str = "auto") -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes on this machine, joined in one process
    group on 127.0.0.1; returns when all are done, raising if one failed."""
    if not isinstance(nprocs, int) or nprocs < 1:
        raise InvalidArgumentError(f"The number of processes must be a positive integer; got {nprocs!r}.")
    import torch.multiprocessing as mp

    if device != "cpu" and torch.cuda.is_available() and nprocs > torch.cuda.device_count():
        raise InvalidArgumentError(_too_few_gpus(nprocs))
    port = _free_port()
    try:
        mp.spawn(_worker, args=(nprocs, port, device, fn, args), nprocs=nprocs, join=True)
    except mp.ProcessRaisedException as exc:
        raise TrainingError(f"A training process failed: {_error_line(str(exc))}") from None
    except mp.ProcessExitedException as exc:
        raise TrainingError(f"A training process ended abnormally ({exc}).") from None


def _worker(index: int, nprocs: int, port: int, device: str, fn: Callable[..., Any], args: Sequence[Any]) -> None:
    os.environ.update(
        {
            "RANK": str(index),
            "LOCAL_RANK": str(index),
            "WORLD_SIZE": str(nprocs),
            "LOCAL_WORLD_SIZE": str(nprocs),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    init_from_env(device)
    try:
        fn(*args)
    except BaseException:
        dist.destroy_process_group()
        raise
    finish()


def finish() -> None:
    """Leave the process group once every rank is done: a rank that left while rank 0 still
    wrote the bundle could bring the others' connections down (an abort in gloo)."""
    dist.barrier()
    dist.destroy_process_group()


def global_batches(n: int, batch_size: int, seed: int, drop_last: bool) -> list[list[int]]:
    """The shuffled index batches of one epoch over ``n`` samples, drawn from ``seed`` alone,
    so that every rank (and a one-process run) sees the same global batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class RankBatches(Sampler[list[int]]):
    """One rank's share of each global batch: contiguous slices whose sizes differ by at most
    one. A final batch with fewer samples than ranks is left out, since a rank with nothing
    to compute would stall the others' gradient exchange."""

    def __init__(self, batches: list[list[int]], rank: int, world: int) -> None:
        self.shares = [
            [int(i) for i in np.array_split(np.asarray(batch), world)[rank]] for batch in batches if len(batch) >= world
        ]
        self.global_sizes = [len(batch) for batch in batches if len(batch) >= world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.shares)

    def __len__(self) -> int:
        return len(self.shares)


def all_sum(values: Sequence[float]) -> list[float]:
    """Sum numbers over all ranks (the values themselves on one process)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def agree(flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank, so that decisions taken on each rank (the best
    epoch, early stopping) cannot split the ranks even if their validations differed."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def from_rank0(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every rank: work done once, shared."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: NCCL moves CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_world(batch_size: int) -> None:
    """Refuse a global batch that cannot give every rank at least one sample."""
    if batch_size < world_size():
        raise InvalidArgumentError(
            f"The batch size ({batch_size}) is the global batch, shared by {world_size()} processes: "
            "it must be at least the number of processes."
        )
