"""A small ResNet on neighbouring-pixel residuals, after NPR (Tan et al., CVPR 2024).

Generators build images by up-sampling, which leaves each 2x2 block of output pixels more
alike than a camera's pixels are. Subtracting the image's own 2x nearest down-and-up
sampled copy removes the content and keeps exactly that local correlation, so a shallow
network trained from scratch can learn the trace instead of faces or backgrounds.

The residual is invariant to any constant added per channel, so normalisation only sets
its scale: the entry takes pixels in [0, 1] with no mean or std, and ``residual_scale``
lifts the residuals of natural 224 px images (std about 0.02-0.06) to a few tenths, well
clear of BatchNorm's epsilon. Down-sampling happens only in learned stride-2 convolutions
(no max-pooling), the stem's aligned with the 2x2 grid the residual is defined on.

Traces this fine suffer from resampling: training and inference both resize to the input
size, so this net sees resized traces unless the crops already have that size.

Default: stages of 64/128/256 channels with 2/2/1 blocks, 1,577,505 parameters. A forward
pass of 32 images at 224 px took about 1.1 s on 2 CPU threads (median; best 0.8 s), against
3.3 s (best 2.5 s) for timm's mobilenetv2_100 in the same run, on a machine busy with other work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidArgumentError
from .registry import register_model

NPR_INPUT = 224


def neighbour_residual(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 2x nearest down- and up-sampled copy: zero on each 2x2 block's top-left pixel,
    the difference to it on the other three. Works for odd sizes (the last block is cut)."""
    height, width = x.shape[-2:]
    coarse = F.interpolate(x[..., ::2, ::2], scale_factor=2.0, mode="nearest")
    return x - coarse[..., :height, :width]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class NPRResNet(nn.Module):
    """Residual -> 3x3 stride-2 stem -> stages of BasicBlocks (each starts with stride 2) -> pool -> one logit."""

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256),
        depths: Sequence[int] = (2, 2, 1),
        stem_width: int = 32,
        residual_scale: float = 10.0,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or not widths or min(*widths, *depths, stem_width) < 1:
            raise InvalidArgumentError(
                f"npr-resnet needs as many stage widths as depths, all positive; got widths={list(widths)}, "
                f"depths={list(depths)}, stem_width={stem_width}."
            )
        self.residual_scale = residual_scale
        self.stem = nn.Sequential(
            _conv3x3(3, stem_width, stride=2),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        channels = stem_width
        for index, (width, depth) in enumerate(zip(widths, depths), start=1):
            blocks = [BasicBlock(channels, width, stride=2)]
            blocks += [BasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(f"stage{index}", nn.Sequential(*blocks))
            channels = width
        self.num_stages = len(widths)
        self.head = nn.Linear(channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation, and each block's last BatchNorm at zero so every block starts as
        its shortcut: a deep-ish net then trains from scratch like a shallow one at first."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(neighbour_residual(x) * self.residual_scale)
        for index in range(1, self.num_stages + 1):
            out = getattr(self, f"stage{index}")(out)
        return self.head(out.mean(dim=(2, 3)))


@register_model(
    "npr-resnet",
    input_size=NPR_INPUT,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    explain_layer="stage3",
    description="Small ResNet on neighbouring-pixel residuals (NPR, up-sampling traces); trains from scratch, 224 px.",
    recipe={
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "augment": "default",
        "batch_size": 32,
    },
)
def npr_resnet(*, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The registry's builder; there are no pretrained weights, since the net is meant to train from scratch."""
    if pretrained:
        raise InvalidArgumentError("npr-resnet has no pretrained weights; it trains from scratch.")
    return NPRResNet(**kwargs)
