"""Image degradations a detector meets in the wild: JPEG re-compression, downscaling, blur.

The same functions serve as training augmentations (random strength per image) and as the
fixed perturbations of the robustness table. They take and return uint8 batches (N x 3 x H x W)
because JPEG is defined on bytes; the rest are tensor ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from synthgap.train.config import AugmentConfig


def _per_image(value: float | torch.Tensor, n: int) -> torch.Tensor:
    return (
        torch.as_tensor(value, dtype=torch.float32).expand(n)
        if not torch.is_tensor(value) or value.ndim == 0
        else value.float()
    )


def jpeg_bytes(img: torch.Tensor, quality: int) -> bytes:
    """One uint8 image (3 x H x W) encoded as JPEG (libjpeg through torchvision)."""
    return encode_jpeg(img.cpu().contiguous(), quality=int(quality)).numpy().tobytes()


def jpeg(x: torch.Tensor, quality: int | torch.Tensor) -> torch.Tensor:
    """Encode and decode each image as JPEG at its quality (libjpeg through torchvision)."""
    if len(x) == 0:
        return x
    q = _per_image(quality, len(x)).round().int().tolist()
    out = [decode_jpeg(encode_jpeg(img.contiguous(), quality=int(qi))) for img, qi in zip(x.cpu(), q)]
    return torch.stack(out).to(x.device)


def downscale(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Shrink each image by its factor (antialiased) and scale it back up: detail is lost, the size is kept."""
    if len(x) == 0:
        return x
    n, _, h, w = x.shape
    f = _per_image(factor, n)
    out = torch.empty_like(x)
    for value in f.unique().tolist():  # one resize per distinct factor, not per image
        idx = (f == value).nonzero().flatten().to(x.device)
        small = F.interpolate(
            x[idx].float(),
            size=(max(1, round(h * value)), max(1, round(w * value))),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        out[idx] = back.round().clamp(0, 255).to(x.dtype)
    return out


def blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a sigma per image: one grouped convolution over the whole batch."""
    if len(x) == 0:
        return x
    n, c, h, w = x.shape
    s = _per_image(sigma, n).clamp(min=1e-3).to(x.device)
    radius = max(1, int(torch.ceil(3 * s.max()).item()))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / s[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, taps)
    y = F.pad(x.float().reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w).round().clamp(0, 255).to(x.dtype)


def robust_augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Each degradation hits a random subset of the uint8 batch, with a random strength."""
    n = len(x)

    def draw(p: float, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        hit = torch.rand(n, generator=g, device=g.device) < p
        strength = torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo
        return hit.nonzero().flatten().to(x.device), strength.to(x.device)

    if cfg.jpeg > 0:
        idx, q = draw(cfg.jpeg, *cfg.jpeg_quality)
        x = x.clone()
        x[idx] = jpeg(x[idx], q[idx])
    if cfg.downscale > 0:
        idx, f = draw(cfg.downscale, *cfg.downscale_range)
        x = x.clone()
        lo, hi = cfg.downscale_range  # a few distinct factors (1/16 steps) keep it batched
        x[idx] = downscale(x[idx], ((f[idx] * 16).round() / 16).clamp(lo, hi))
    if cfg.blur > 0:
        idx, s = draw(cfg.blur, *cfg.blur_sigma)
        x = x.clone()
        x[idx] = blur(x[idx], s[idx])
    return x


def uses_robust(cfg: AugmentConfig) -> bool:
    return cfg.jpeg > 0 or cfg.downscale > 0 or cfg.blur > 0


# The robustness table: the test set under each fixed perturbation. JPEG q95 to q60 spans what cameras, photo
# apps and social sites re-encode a photo at; q50 stays as the harsh end (and `detector compare`'s column).
PERTURBATIONS = {
    "jpeg q95": lambda x: jpeg(x, 95),
    "jpeg q90": lambda x: jpeg(x, 90),
    "jpeg q75": lambda x: jpeg(x, 75),
    "jpeg q60": lambda x: jpeg(x, 60),
    "jpeg q50": lambda x: jpeg(x, 50),
    "downscale x0.5": lambda x: downscale(x, 0.5),
    "blur sigma 1": lambda x: blur(x, 1.0),
}
