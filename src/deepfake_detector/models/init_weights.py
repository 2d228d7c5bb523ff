"""Start a network from a local safetensors file (the offline ``--init-weights``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import BundleError


def load_init_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``path`` whose name and shape match into ``model``.

    Returns ``(loaded, skipped)`` names. Tensors with a different shape (typically an
    ImageNet classifier in place of our one-logit head) are skipped, not forced. Nothing
    matching at all is an error: the file is for another architecture.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: initial weights file not found.")
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise BundleError(f"{path}: not a readable safetensors file ({exc}).") from exc
    own = model.state_dict()
    usable = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(tensors) - set(usable))
    if not usable:
        raise BundleError(f"{path}: none of its {len(tensors)} tensors match this architecture by name and shape.")
    with torch.no_grad():
        for k, v in usable.items():
            own[k].copy_(v)
    return sorted(usable), skipped
