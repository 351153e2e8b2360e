"""Quality guards of a generated set: blanked images, and perceptual-hash near-duplicates inside
the set and against a real test set (a generator that copies its training data shows up here)."""
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


def quality_report(out: str | Path, real=None, max_distance: int = 4) -> dict:
    """Write DIR/quality.json: blanked-and-regenerated images, near-duplicates within the set and vs `real`.

    real: an ImageSet (e.g. the real test split), compared at the same size.
    """
    out = Path(out)
    rows = read_manifest(out)[0]
    hashes = phashes(Image.open(out / r["path"]).convert("RGB") for r in rows)
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
        report["real_set"] = real.name
        report["near_duplicates_vs_real"] = [{"synthetic": rows[i]["id"], "real_index": j, "distance": d} for i, j, d in vs]
    write_json(out / "quality.json", report)
    return report
