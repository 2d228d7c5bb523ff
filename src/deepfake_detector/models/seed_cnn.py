"""The prototype's network, layer for layer, so its Keras weights map onto it.

Conv 32/64/128 (3x3, valid padding, ReLU), each followed by 2x2 max-pooling; Flatten;
Dense 128 ReLU; Dropout 0.5; Dense 1. At 128x128 input: 3,304,769 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .registry import register_model

SEED_CNN_INPUT = 128


class SeedCNN(nn.Module):
    """Three conv blocks and a dense head; ``forward`` returns one logit per image."""

    def __init__(self, input_size: int = SEED_CNN_INPUT) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size
        for _ in range(3):
            side = (side - 2) // 2
        self.feature_side = side
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' default initialisation (Glorot-uniform kernels, zero biases), as the prototype had."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    "seed-cnn",
    input_size=SEED_CNN_INPUT,
    explain_layer="features.7",
    description="The prototype's 3-layer CNN (pixels / 255, no normalisation).",
    recipe={"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "augment": "none", "batch_size": 32},
)
def seed_cnn(*, pretrained: bool = False, **kwargs: int) -> nn.Module:
    if pretrained:
        raise InvalidArgumentError("seed-cnn has no pretrained weights; use import-keras for the prototype's .h5.")
    return SeedCNN(**kwargs)
