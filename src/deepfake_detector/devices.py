"""Which torch device to run on."""

from __future__ import annotations

import torch

from .errors import InvalidArgumentError


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when asked for, or when available under "auto"; else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgumentError(f"Unknown device {name!r}; use auto, cpu or cuda[:N].") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device 'cuda' was asked for but no CUDA GPU is available.")
    return device
