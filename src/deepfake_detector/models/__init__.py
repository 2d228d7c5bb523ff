"""Named model builders. Importing this package registers every architecture."""

from . import npr, seed_cnn, timm_backbones  # noqa: F401  (registration side effect)
from .init_weights import load_init_weights
from .pretrained import IMAGENET_INITS, imagenet_state_dict, load_imagenet_weights
from .registry import ModelSpec, count_parameters, create_model, get_spec, list_models, register_model

__all__ = [
    "IMAGENET_INITS",
    "imagenet_state_dict",
    "load_imagenet_weights",
    "ModelSpec",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "load_init_weights",
    "register_model",
]
