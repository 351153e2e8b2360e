"""The data audit on the shared sets (CIFAR-10's six animal classes and CIFAKE's Stable Diffusion 1.4
images: 72,000 images), on this machine's CPU. Prints, asserts nothing:

1. a cold audit (empty caches: decoding included) and a warm one (read from the cache): seconds and the
   process's peak memory, against the targets (<= 3 minutes, <= 2 GB);
2. what it found: pairs per kind, test images with a training twin;
3. calibration on 2,000 CIFAR-10 test photos: how many JPEG q60/q75 and 1/2-pixel-shifted copies it
   finds, the correlation of copies against that of each photo's most similar *other* photo, and the
   same for the Lite0 feature cosine (the confirmation it does not use);
4. scaling: the exhaustive Hamming search on random hashes at 72,000 and 200,000 images, and what
   that gives for 1,000,000.

    SYNTHGAP_DATA=../shared/data .venv/bin/python benchmarks/audit.py
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthgap import ANIMALS

ROOT = Path(os.environ.get("SYNTHGAP_DATA", "../shared/data"))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shared_audit() -> None:
    from synthgap.audit import AuditPart, audit, summary_lines
    from synthgap.data import load_spec

    t0 = time.perf_counter()
    parts = [
        AuditPart(spec, split, domain, load_spec(spec, split, list(ANIMALS), 32, ROOT, domain))
        for domain, spec in (("real", "cifar10"), ("synthetic", str(ROOT / "cifake-sd14-fake")))
        for split in ("train", "test")
    ]
    decoded = time.perf_counter() - t0
    result = audit(parts, progress=False)
    total = time.perf_counter() - t0
    print(
        f"cold audit of {sum(len(p.data) for p in parts):,} images: {total:.1f} s in all (decoding {decoded:.1f} s, "
        f"the audit {result.seconds:.1f} s: {result.candidates:,} candidate pairs within {result.settings.radius} bits); "
        f"peak memory {peak_mb():,.0f} MB  [targets: <= 180 s, <= 2,048 MB]",
        flush=True,
    )
    t = time.perf_counter()
    again = audit(parts, progress=False)
    print(f"warm audit (same data, from the cache): {time.perf_counter() - t:.1f} s, from_cache={again.from_cache}")
    print("\n".join(summary_lines(result.summary())), flush=True)


def calibration(n: int = 2000) -> None:
    import torch.nn.functional as F
    from PIL import Image

    from synthgap.audit import AuditSettings, aligned_correlation, phashes
    from synthgap.data import load_spec
    from synthgap.generate.fid import lite0_features

    s = AuditSettings()
    photos = load_spec("cifar10", "test", list(ANIMALS), 32, ROOT).images[:n]

    def jpeg(x: torch.Tensor, q: int) -> torch.Tensor:
        out = []
        for a in x:
            buf = io.BytesIO()
            Image.fromarray(a.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=q)
            out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
        return torch.stack(out)

    def shift(x: torch.Tensor, k: int) -> torch.Tensor:
        return F.pad(x.float(), (k, 0, k, 0), mode="replicate")[..., : x.shape[-2], : x.shape[-1]].to(torch.uint8)

    def unit(f: np.ndarray) -> np.ndarray:
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    h = phashes(photos)
    feats = unit(lite0_features(photos))
    print(
        f"\ncalibration on {n:,} CIFAR-10 test photos (32 x 32); found = within {s.radius} bits and r >= {s.min_correlation}"
    )
    for name, copies in (
        ("JPEG q75", jpeg(photos, 75)),
        ("JPEG q60", jpeg(photos, 60)),
        ("shifted 1 px", shift(photos, 1)),
        ("shifted 2 px", shift(photos, 2)),
    ):
        d = np.bitwise_count(h ^ phashes(copies))
        r = aligned_correlation(photos, copies).numpy()
        cos = (feats * unit(lite0_features(copies))).sum(1)
        found = np.mean((d <= s.radius) & (r >= s.min_correlation))
        print(
            f"  {name:>13} copies: found {100 * found:5.1f}%; hash distance median {np.median(d):.0f}, 99th pct "
            f"{np.percentile(d, 99):.0f}; r 1st pct {np.percentile(r, 1):.3f}, min {r.min():.3f}; "
            f"Lite0 cosine 1st pct {np.percentile(cos, 1):.3f}"
        )
    g = photos.float().mean(1).flatten(1)
    g = (g - g.mean(1, keepdim=True)) / g.norm(dim=1, keepdim=True)
    sim = g @ g.T
    sim.fill_diagonal_(-2)
    nearest = sim.argmax(1)  # each photo's most similar other photo, by pixel correlation
    r = aligned_correlation(photos, photos[nearest]).numpy()
    cos_sim = feats @ feats.T
    np.fill_diagonal(cos_sim, -2)
    print(
        f"  look-alikes (each photo's most similar other one of the {n:,}): r median {np.median(r):.3f}, 99.9th pct "
        f"{np.percentile(r, 99.9):.3f}, max {r.max():.3f}; their hash distance median "
        f"{np.median(np.bitwise_count(h ^ h[nearest.numpy()])):.0f}; the most similar by Lite0 cosine: median "
        f"{np.median(cos_sim.max(1)):.3f}, max {cos_sim.max():.3f}"
    )


def scaling() -> None:
    from synthgap.audit import AuditSettings, hamming_pairs

    rng = np.random.default_rng(0)
    chunk = AuditSettings().chunk_elements
    print(
        f"\nexhaustive Hamming search, random hashes, radius 10, {chunk:,} comparisons per chunk "
        f"(~{chunk * 9 / 2**20:.0f} MB whatever the size):"
    )
    for n in (72_000, 200_000):
        h = rng.integers(0, 2**63, n, dtype=np.uint64)
        t = time.perf_counter()
        hamming_pairs(h, 10, chunk_elements=chunk)
        sec = time.perf_counter() - t
        print(f"  {n:>9,} images: {sec:6.1f} s ({sec / (n * (n - 1) / 2) * 1e9:.2f} ns per pair)")
    print(
        f"  1,000,000 images at that rate: ~{sec * (1e6 / 200_000) ** 2 / 60:.0f} min (all pairs, no index, one core); "
        "an index makes it sub-quadratic: faiss's binary indexes (IndexBinaryHNSW, approximate), or multi-index "
        "hashing (exact, but at 10 of 64 bits it splits the hash into 11 blocks of ~6 bits and prunes little)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["shared", "calibration", "scaling"], default=None)
    args = ap.parse_args()
    if not (ROOT / "cifar10-jpeg").is_dir() or not (ROOT / "cifake-sd14-fake").is_dir():
        raise SystemExit(
            f"needs {ROOT}/cifar10-jpeg and {ROOT}/cifake-sd14-fake (set SYNTHGAP_DATA to the shared data folder)"
        )
    os.environ["SYNTHGAP_CACHE"] = tempfile.mkdtemp(
        prefix="synthgap-bench-audit-"
    )  # cold: nothing decoded or audited yet
    if args.only in (None, "shared"):
        shared_audit()
    if args.only in (None, "calibration"):
        calibration()
    if args.only in (None, "scaling"):
        scaling()


if __name__ == "__main__":
    main()
