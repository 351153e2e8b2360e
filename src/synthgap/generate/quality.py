"""Quality figures of a generated set: a per-class sample grid, FID-Lite0 against a real test set,
blanked images, and perceptual-hash near-duplicates inside the set and against the real set (a
generator that copies its training data shows up here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.generate.generator import read_manifest
from synthgap.io import write_json


def phashes(images) -> np.ndarray:
    """64-bit perceptual hashes (imagehash.phash) of PIL images, as uint64."""
    import imagehash

    return np.array([int(str(imagehash.phash(im)), 16) for im in images], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def near_pairs(a: np.ndarray, b: np.ndarray | None, max_distance: int, chunk: int = 512) -> list[tuple[int, int, int]]:
    """(i, j, hamming distance) with distance <= max_distance; within `a` when b is None (i < j)."""
    other = a if b is None else b
    out = []
    for s in range(0, len(a), chunk):
        d = _popcount(a[s : s + chunk, None] ^ other[None, :])
        for i, j in zip(*np.nonzero(d <= max_distance)):
            i = int(i) + s
            if b is None and j <= i:
                continue
            out.append((i, int(j), int(d[i - s, j])))
    return out


def class_grid_of_set(out: Path, rows: list[dict], images: list[Image.Image], per_class: int = 10) -> Path | None:
    """DIR/grid.png: the first `per_class` images of each class, one row per class."""
    import torch
    from torchvision.utils import make_grid

    from synthgap.generate.builtin import save_grid

    if not rows:
        return None
    size = images[0].size

    def tile(im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(im.resize(size))).permute(2, 0, 1).float() / 255

    tiles = []
    for c in dict.fromkeys(r["label"] for r in rows):
        mine = [tile(im) for r, im in zip(rows, images) if r["label"] == c][:per_class]
        tiles += mine + [torch.ones(3, size[1], size[0])] * (per_class - len(mine))
    save_grid(make_grid(torch.stack(tiles), nrow=per_class, padding=1, pad_value=1.0), out / "grid.png")
    return out / "grid.png"


def quality_report(out: str | Path, real=None, max_distance: int = 4) -> dict:
    """Write DIR/quality.json (and DIR/grid.png): FID-Lite0 against `real`, blanked-and-regenerated images,
    near-duplicates within the set and against `real`.

    real: an ImageSet (e.g. the real test split), compared at the same size.
    """
    import torch

    out = Path(out)
    rows = read_manifest(out)[0]
    images = [Image.open(out / r["path"]).convert("RGB") for r in rows]
    class_grid_of_set(out, rows, images)
    hashes = phashes(images)
    within = near_pairs(hashes, None, max_distance)
    report = {
        "images": len(rows),
        "hash": "imagehash.phash (64 bit)",
        "max_hamming_distance": max_distance,
        "blanked_and_regenerated": [{"id": r["id"], "blanked_seeds": r["blanked_seeds"], "seed": r["seed"]}
                                    for r in rows if r.get("blanked_seeds")],
        "near_duplicates_within": [{"a": rows[i]["id"], "b": rows[j]["id"], "distance": d} for i, j, d in within],
    }
    if real is not None:
        real_hashes = phashes(Image.fromarray(x.permute(1, 2, 0).numpy()) for x in real.images)
        vs = near_pairs(hashes, real_hashes, max_distance)
        from synthgap.generate.fid import FEATURES, fid_lite0

        report["real_set"] = real.name
        pixels = torch.stack([torch.from_numpy(np.array(im.resize(real.images.shape[-2:][::-1]))).permute(2, 0, 1)
                              for im in images])
        report["fid_lite0"] = round(fid_lite0(pixels, real.images), 4) if min(len(pixels), len(real)) >= 2 else None
        report["fid_features"] = FEATURES
        report["near_duplicates_vs_real"] = [{"synthetic": rows[i]["id"], "real_index": j, "distance": d} for i, j, d in vs]
    write_json(out / "quality.json", report)
    return report
