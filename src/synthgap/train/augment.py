"""Augmentation as batched tensor ops on the training device (no PIL, no per-image Python)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synthgap.models import CIFAR_MEAN, CIFAR_STD
from synthgap.train.config import AugmentConfig

# Fixed normalisation for every arm and domain: "same preprocessing" means the same constants.
MEAN = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    x = x_uint8.float().div_(255)
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Reflect-pad by `pad`, then take one random HxW window per image (a gather, no loop)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    x = xp.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return x.gather(3, cols)


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """x: a normalised float batch. Every random draw comes from `g`, so a seeded run repeats exactly."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo).to(x.device)

    if cfg.crop_pad > 0:
        x = random_crop(x, cfg.crop_pad, g)
    if cfg.flip:
        flip = uniform(0, 1) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.rotate > 0 or cfg.zoom > 0:
        angle = uniform(-cfg.rotate, cfg.rotate) * (math.pi / 180)
        scale = 1 / uniform(1 - cfg.zoom, 1 + cfg.zoom)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        # In normalised space: contrast scales around the image mean, brightness shifts.
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        c = uniform(1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None]
        b = uniform(-cfg.brightness, cfg.brightness)[:, None, None, None] / STD.mean().item()
        x = (x - mean) * c + mean + b
    return x
