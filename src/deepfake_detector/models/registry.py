"""A registry of named model builders, in the manner of timm's ``register_model``.

A model exists once its module is imported; ``create_model`` is the one door in, and
``list_models`` is what the ``models`` command and ``--arch`` choices show. Each entry
carries the preprocessing its weights expect, so that config travels with the network.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture.

    ``builder(pretrained=False, **kwargs)`` returns a module mapping an ``(N, 3, H, W)``
    float tensor to ``(N, 1)`` logits of "fake". ``mean``/``std`` are applied after scaling
    pixels to [0, 1]. ``explain_layer`` names the module Grad-CAM should look at.
    ``recipe`` holds training defaults that suit this network (optimizer, lr, augment).
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    explain_layer: str = ""
    description: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    input_size: int,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    explain_layer: str = "",
    description: str = "",
    recipe: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that records a builder under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            warnings.warn(f"Model {name!r} registered twice; the later builder wins.", stacklevel=2)
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            input_size=input_size,
            mean=mean,
            std=std,
            explain_layer=explain_layer,
            description=description,
            recipe=dict(recipe or {}),
        )
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; an unknown name raises with close matches and the full list."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model architecture {name!r}.{hint} Known architectures: {', '.join(list_models())}."
        ) from None


def create_model(name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``None`` keyword values are dropped so builder defaults win."""
    spec = get_spec(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return spec.builder(pretrained=pretrained, **kwargs)


def count_parameters(name: str) -> int:
    """Parameter count of an architecture, built on the meta device so nothing is allocated."""
    import torch

    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())
