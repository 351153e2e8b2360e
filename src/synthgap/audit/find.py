"""Twins in image sets: exact (the same pixels at their native size) and near (a perceptual hash
within a Hamming radius, confirmed by the correlation of the two images at their best small shift).

Why a pixel correlation and not a feature distance: at 32 x 32 the pooled ImageNet features of
EfficientNet-Lite0 (FID-Lite0's) do not tell copies from look-alikes. Measured on 2,000 CIFAR-10 test
photos (benchmarks/audit.py): a JPEG q60 copy has a feature cosine of 0.78 at its 1st percentile, while
each photo's most similar *other* photo reaches up to 0.84; the aligned correlation of the copies is at
least 0.98, that of those look-alikes 0.61 in the median and 0.93 at most. It is also blind to
brightness and contrast edits (a recoloured copy is still a copy) and cannot confirm two flat images of
different colours (flat images are compared by their colour instead). A perceptual hash is robust to
re-encoding and resizing, not to shifts: a 1-pixel shift of a 32 x 32 photo is found half the time, a
2-pixel one (6% of the side) almost never; in a photo-sized image the same shift is found.

Pairs are found by comparing every hash with every other, in chunks of bounded memory
(`hamming_pairs`): at 72,000 images that is 2.6 billion comparisons, seconds with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

HASH = "imagehash.phash, 64 bit, of the decoded image"
CORRELATION = (
    "grayscale Pearson correlation, both images blurred (Gaussian, sigma 0.7 px), at the best shift of up "
    "to side/16 pixels (at most 64 x 64 compared)"
)
BLUR_SIGMA = 0.7  # px at the compared size: forgives sub-pixel shifts and JPEG noise, not another picture
FLAT_STD = 1.0  # a grayscale standard deviation below this is a flat image: no structure to correlate
FLAT_COLOUR = 4.0  # two flat images are twins when no channel's mean differs by more (of 255)


@dataclass(frozen=True)
class AuditSettings:
    radius: int = 10  # Hamming radius (of 64 bits) within which two phashes make a candidate pair
    min_correlation: float = 0.96  # a candidate is a confirmed near twin at or above this correlation
    chunk_elements: int = 1 << 24  # hash comparisons held at once (~150 MB), whatever the number of images

    def check(self) -> None:
        from synthgap import SynthgapError

        if not 0 <= self.radius <= 32:
            raise SynthgapError(f"--radius: expected 0..32 bits of the 64-bit hash, got {self.radius}")
        if not 0 < self.min_correlation <= 1:
            raise SynthgapError(f"--min-correlation: expected a value in (0, 1], got {self.min_correlation}")


def phashes(images: torch.Tensor, progress: bool = False) -> np.ndarray:
    """64-bit perceptual hashes (imagehash.phash) of uint8 images (N x 3 x H x W), as uint64."""
    import imagehash
    from PIL import Image

    from synthgap.io import progress_bar

    arrays = images.permute(0, 2, 3, 1).numpy()
    out = np.empty(len(arrays), dtype=np.uint64)
    for i in progress_bar(
        range(len(arrays)), desc="perceptual hashes", unit="img", enabled=progress and len(arrays) >= 5000
    ):
        out[i] = int(str(imagehash.phash(Image.fromarray(arrays[i]))), 16)
    return out


def hamming_pairs(
    hashes: np.ndarray, radius: int, other: np.ndarray | None = None, chunk_elements: int = 1 << 24
) -> np.ndarray:
    """(i, j, distance) rows for every pair within `radius` bits: i < j within `hashes` when `other`
    is None, else i into `hashes` and j into `other`.

    Exhaustive and exact: a block of rows is compared with every column at once, the block sized so
    that no more than `chunk_elements` comparisons are held, so memory stays bounded at any size.
    """
    within = other is None
    cols = hashes if within else other
    n, m = len(hashes), len(cols)
    rows = max(1, chunk_elements // max(m, 1))
    found = []
    for s in range(0, n, rows):
        block = hashes[s : s + rows]
        start = s if within else 0  # within one set only the upper triangle
        d = np.bitwise_count(block[:, None] ^ cols[None, start:])
        i, j = np.nonzero(d <= radius)
        if within:
            keep = j > i
            i, j = i[keep], j[keep]
        found.append(np.stack([i + s, j + start, d[i, j]], axis=1).astype(np.int64))
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.int64)


def _gray(images: torch.Tensor, side: int) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    g = images.float().mean(1, keepdim=True)
    if g.shape[-1] > side or g.shape[-2] > side:
        g = F.interpolate(g, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return gaussian_blur(g, [5, 5], [BLUR_SIGMA, BLUR_SIGMA])[:, 0]


@torch.no_grad()
def aligned_correlation(a: torch.Tensor, b: torch.Tensor, max_side: int = 64) -> torch.Tensor:
    """Best Pearson correlation of the grayscale images a[k] and b[k], blurred a little, over integer shifts
    of up to side/16 pixels (2 at 32 x 32), on their overlap; images larger than max_side are compared at
    max_side. Flat images (no structure) get 1 when their mean colours agree within FLAT_COLOUR, else 0."""
    ga, gb = _gray(a, max_side), _gray(b, max_side)
    h, w = ga.shape[-2:]
    r = max(1, min(h, w) // 16)
    best = torch.full((len(a),), -1.0)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            pa = ga[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)].flatten(1)
            pb = gb[:, max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)].flatten(1)
            pa = pa - pa.mean(1, keepdim=True)
            pb = pb - pb.mean(1, keepdim=True)
            best = torch.maximum(best, (pa * pb).sum(1) / (pa.norm(dim=1) * pb.norm(dim=1)).clamp_min(1e-6))
    flat_a, flat_b = ga.flatten(1).std(1) < FLAT_STD, gb.flatten(1).std(1) < FLAT_STD
    same_colour = (a.float().mean((2, 3)) - b.float().mean((2, 3))).abs().amax(1) <= FLAT_COLOUR
    best = torch.where(flat_a | flat_b, (flat_a & flat_b & same_colour).float(), best)
    return best.clamp(-1, 1)


def exact_pairs(native: np.ndarray) -> np.ndarray:
    """(i, j) rows, i < j, for every two images with the same native pixel hash."""
    order = np.argsort(native, kind="stable")
    sorted_h = native[order]
    starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
    sizes = np.diff(np.r_[starts, len(native)])
    pairs = []
    for s, k in zip(starts[sizes > 1], sizes[sizes > 1]):
        members = np.sort(order[s : s + k])
        i, j = np.triu_indices(k, 1)
        pairs.append(np.stack([members[i], members[j]], axis=1))
    return np.concatenate(pairs).astype(np.int64) if pairs else np.empty((0, 2), dtype=np.int64)


@dataclass
class Twins:
    exact: np.ndarray  # (E, 2) index pairs i < j with the same native pixels
    near: np.ndarray  # (M, 2) index pairs i < j: confirmed near twins (exact ones not repeated)
    hamming: np.ndarray  # (M,) phash distance of each near pair
    correlation: np.ndarray  # (M,) aligned correlation of each near pair
    candidates: int  # pairs within the Hamming radius, before confirmation


def find_twins(
    chunks: list[torch.Tensor], native: np.ndarray, settings: AuditSettings, progress: bool = False
) -> Twins:
    """Exact and confirmed near twins among the images of `chunks` (uint8 tensors N_k x 3 x H x W, indexed
    as one sequence, never concatenated: memory stays that of the sets) whose native pixel hashes are `native`."""
    starts = np.cumsum([0] + [len(c) for c in chunks])

    def take(index: np.ndarray) -> torch.Tensor:
        which = np.searchsorted(starts, index, side="right") - 1
        return torch.stack([chunks[k][i - starts[k]] for k, i in zip(which.tolist(), index.tolist())])

    exact = exact_pairs(native)
    hashes = np.concatenate([phashes(c, progress) for c in chunks]) if chunks else np.empty(0, np.uint64)
    cand = hamming_pairs(hashes, settings.radius, chunk_elements=settings.chunk_elements)
    n_candidates = len(cand)
    if len(exact) and len(cand):  # exact twins are reported once, as exact
        is_exact = np.isin(cand[:, 0] * len(native) + cand[:, 1], exact[:, 0] * len(native) + exact[:, 1])
        cand = cand[~is_exact]
    corr = np.empty(len(cand), dtype=np.float64)
    for s in range(0, len(cand), 4096):
        c = cand[s : s + 4096]
        corr[s : s + 4096] = aligned_correlation(take(c[:, 0]), take(c[:, 1])).numpy()
    keep = corr >= settings.min_correlation
    return Twins(exact, cand[keep, :2], cand[keep, 2], corr[keep], n_candidates)
