"""synthgap's own classifiers for small images; synthgap.models.registry builds them by name."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """airbench's block: conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU (halves the resolution)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class AirNet(nn.Module):
    """The default CNN: a CPU-sized airbench network for 32x32 inputs (any size divisible by 8 works).

    A 2x2 stem conv, three conv blocks, global max pooling and a linear head whose output is
    scaled down (airbench's trick: it keeps the logits small early in training).
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (32, 64, 128), stem: int = 24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 2, padding=0), nn.GELU())
        self.blocks = nn.Sequential(
            ConvBlock(stem, widths[0]), ConvBlock(widths[0], widths[1]), ConvBlock(widths[1], widths[2])
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = 1 / 9

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


def resnet18_cifar(num_classes: int) -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max pool."""
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    return m


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
