"""Resumable training state, stored without pickle.

Tensors (model, best model, optimizer buffers) go into safetensors files and everything
else into JSON, in a ``.checkpoint`` folder inside the run's output folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .bundle import state_mismatch
from .errors import CheckpointError

CHECKPOINT_DIR = ".checkpoint"
# What training reads back from state.json when it resumes.
_META_KEYS = ("config", "epoch", "history", "best_score", "best_epoch", "bad_epochs", "optimizer")


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entries in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
) -> None:
    """Write the state after an epoch; the folder is replaced atomically."""
    final = run_dir / CHECKPOINT_DIR
    tmp = run_dir / (CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    if best_state is not None:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**meta, "optimizer": opt_meta}, indent=1))
    old = run_dir / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` when the run has no checkpoint.

    Falls back to the previous epoch's state when a crash hit between the two renames
    of :func:`save_checkpoint`.
    """
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        folder = run_dir / name
        if (folder / "state.json").is_file():
            break
    else:
        return None
    try:
        meta = json.loads((folder / "state.json").read_text())
        absent = [key for key in _META_KEYS if key not in meta]
        if absent:
            raise ValueError(f"state.json lacks {', '.join(absent)}")
        best = folder / "best.safetensors"
        optimizer = _unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta.pop("optimizer"))
        return {
            "folder": folder,
            "meta": meta,
            "model": load_file(str(folder / "model.safetensors")),
            "best": load_file(str(best)) if best.is_file() else None,
            "optimizer": optimizer,
        }
    except Exception as exc:  # noqa: BLE001 - any damage means the same thing to the user
        raise CheckpointError(
            f"{folder}: the interrupted run's checkpoint is damaged ({type(exc).__name__}: {exc}); "
            "rerun without --resume to start over."
        ) from exc


def restore_checkpoint(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put a loaded checkpoint's weights and optimizer state into ``model`` and ``optimizer``.

    Weights of another network are refused up front with a one-line summary (torch's own
    error lists every tensor, kilobytes of it), and the best epoch's weights are checked too,
    as they would otherwise fail only after the whole run.
    """
    folder = state["folder"]
    expected = model.state_dict()
    for name, found in (("model", state["model"]), ("best", state["best"])):
        why = state_mismatch(expected, found) if found is not None else ""
        if why:
            raise CheckpointError(
                f"{folder}: the checkpoint's {name}.safetensors does not fit the {type(model).__name__} being "
                f"trained ({why}); rerun without --resume to start over."
            )
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{folder}: the checkpoint's optimizer state does not fit the network being trained ({exc}); "
            "rerun without --resume to start over."
        ) from exc


def remove_checkpoint(run_dir: Path) -> None:
    """Delete the run's checkpoint once its bundle is written."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old", CHECKPOINT_DIR + ".tmp"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
