"""timm backbones with a one-logit head, under the names users know them by.

Random initialisation by default. ``pretrained=True`` asks timm for its weights, which
needs a network; offline users pass a local safetensors file to ``load_init_weights``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ..errors import InvalidArgumentError
from .registry import IMAGENET_MEAN, IMAGENET_STD, register_model

_SCRATCH_RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "augment": "default", "batch_size": 32}

# our name -> (timm name, input size, Grad-CAM layer, description)
_INCEPTION = (0.5, 0.5, 0.5)  # inputs in [-1, 1], as TensorFlow's edge models were trained

# our name -> (timm name, input size, Grad-CAM layer, normalisation mean and std, description)
TIMM_BACKBONES: dict[str, tuple[str, int, str, tuple[float, float, float], tuple[float, float, float], str]] = {
    "resnet18": ("resnet18", 224, "layer4", IMAGENET_MEAN, IMAGENET_STD, "ResNet-18 (timm), 224 px."),
    "efficientnet_b0": ("efficientnet_b0", 224, "bn2", IMAGENET_MEAN, IMAGENET_STD, "EfficientNet-B0 (timm), 224 px."),
    "efficientnet_lite0": (
        "tf_efficientnet_lite0",
        224,
        "bn2",
        _INCEPTION,
        _INCEPTION,
        "EfficientNet-Lite0 (timm, TensorFlow padding), 224 px; --imagenet-init offline.",
    ),
    "mobilenetv2_100": (
        "mobilenetv2_100",
        224,
        "bn2",
        IMAGENET_MEAN,
        IMAGENET_STD,
        "MobileNetV2 1.0 (timm), 224 px; --imagenet-init offline.",
    ),
    "xception": (
        "legacy_xception",
        299,
        "act4",
        IMAGENET_MEAN,
        IMAGENET_STD,
        "Xception as in FaceForensics++ (timm legacy_xception), 299 px.",
    ),
}


@contextmanager
def _hub_offline_from_env() -> Iterator[None]:
    """Honour ``HF_HUB_OFFLINE`` as it is now, not only as it was when huggingface_hub was imported.

    huggingface_hub reads the variable once, at import; set later (in a notebook, a test),
    it was ignored and an offline ``pretrained=True`` retried the network for about a minute.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() not in {"1", "ON", "YES", "TRUE"}:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _timm_builder(timm_name: str):
    def build(*, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        import timm

        try:
            with _hub_offline_from_env():
                return timm.create_model(timm_name, pretrained=pretrained, num_classes=1, **kwargs)
        except Exception as exc:
            if not pretrained:
                raise
            raise InvalidArgumentError(
                f"Could not fetch pretrained weights for {timm_name!r} ({type(exc).__name__}: {exc}). "
                "This needs network access to the Hugging Face hub; offline, pass a local "
                "safetensors file with --init-weights FILE instead."
            ) from exc

    return build


for _name, (_timm_name, _size, _layer, _mean, _std, _description) in TIMM_BACKBONES.items():
    register_model(
        _name,
        input_size=_size,
        mean=_mean,
        std=_std,
        explain_layer=_layer,
        description=_description,
        recipe=_SCRATCH_RECIPE,
    )(_timm_builder(_timm_name))
