"""Format-bias audit for real-vs-synthetic image detectors.

Published detectors often learn JPEG-vs-PNG, image size or file size instead of generation
artefacts, because real photos and generated images are usually stored differently. This audit fits
a shallow tree on file metadata alone: if it beats chance, a detector trained on the same files can
score well without looking at the content, and its accuracy says little about generation artefacts.
"""

from __future__ import annotations

import io
import os
import random
from collections import Counter
from statistics import median
from typing import Any

import numpy as np
from PIL import Image

from synthgap import SynthgapError

FEATURES = (
    "format",
    "width",
    "height",
    "mode",
    "jpeg_quality",
    "file_bytes",
    "has_c2pa",
    "has_exif",
    "has_xmp",
    "has_text",
)  # the last four: metadata present (1) or not (0)
_CATEGORICAL = ("format", "mode")
METADATA_FEATURES = ("has_c2pa", "has_exif", "has_xmp", "has_text")

# IJG (libjpeg) standard luminance table, ITU-T T.81 Annex K, in natural (row-major) order as
# Pillow >= 8.3 reports im.quantization.
_IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
)


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # jpeg_quality_scaling()
    return np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)


_IJG_TABLES = np.stack([_ijg_table(q) for q in range(1, 101)])


def _jpeg_quality(quantization: dict | None) -> int:
    # Nearest IJG quality, not an exact match: cameras and editors use their own tables.
    if not quantization or 0 not in quantization:
        return 0
    luma = np.asarray(quantization[0], dtype=np.int64)
    return int(np.abs(_IJG_TABLES - luma).sum(axis=1).argmin()) + 1


def _metadata(source: Any, name: str, file_bytes: int) -> dict:
    from synthgap.provenance import scan_metadata

    try:
        # Image.open only parses the header; the pixels are never decoded here.
        with Image.open(source) as im:
            w, h = im.size
            row = {
                "format": im.format or "",
                "width": w,
                "height": h,
                "mode": im.mode,
                "jpeg_quality": _jpeg_quality(getattr(im, "quantization", None)),
                "file_bytes": file_bytes,
            }
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SynthgapError(f"cannot read image {name}: {e}") from e
    if isinstance(source, io.BytesIO):
        source.seek(0)
    scan = scan_metadata(source)  # C2PA store, EXIF, XMP, text chunks: present or not
    return {**row, **{f: int(getattr(scan, f)) for f in ("has_c2pa", "has_exif", "has_xmp", "has_text")}}


def file_metadata(path: str | os.PathLike) -> dict:
    """format, width, height, mode, jpeg_quality (0 if not JPEG), file_bytes and whether the file carries a
    C2PA manifest, EXIF, XMP or text chunks (1/0) of one image file."""
    try:
        size = os.path.getsize(path)
    except OSError as e:  # missing file: same user-facing error as an undecodable one
        raise SynthgapError(f"cannot read image {os.fspath(path)}: {e}") from e
    return _metadata(path, os.fspath(path), size)


def metadata_of_bytes(data: bytes) -> dict:
    """The same fields as file_metadata for an in-memory encoded image."""
    return _metadata(io.BytesIO(data), "<bytes>", len(data))


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Per feature, its column block: one-hot for categorical features, one column otherwise."""
    try:
        out = {}
        for f in FEATURES:
            values = [r[f] for r in rows]
            if f in _CATEGORICAL:
                cats = sorted(set(map(str, values)))
                out[f] = np.array([[str(v) == c for c in cats] for v in values], dtype=float)
            else:
                out[f] = np.array(values, dtype=float)[:, None]
        return out
    except KeyError as e:
        raise SynthgapError(f"metadata dict lacks the field {e}; build it with file_metadata") from e


def _cv_balanced_accuracy(x: np.ndarray, y: np.ndarray, depth: int, folds: int, seed: int) -> float:
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=depth, class_weight="balanced", random_state=seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(balanced_accuracy_score(y, cross_val_predict(tree, x, y, cv=cv)))


def _summary(rows: list[dict]) -> dict:
    sizes = Counter(f"{r['width']}x{r['height']}" for r in rows)
    qualities = [r["jpeg_quality"] for r in rows if r["jpeg_quality"] > 0]
    return {
        "n": len(rows),
        "formats": dict(Counter(r["format"] for r in rows).most_common()),
        "modes": dict(Counter(r["mode"] for r in rows).most_common()),
        "distinct_sizes": len(sizes),
        "top_sizes": dict(sizes.most_common(5)),
        "jpeg_quality_median": float(median(qualities)) if qualities else None,
        "file_bytes_median": float(median(r["file_bytes"] for r in rows)),
        "with_metadata": {f.removeprefix("has_"): sum(r.get(f, 0) for r in rows) for f in METADATA_FEATURES},
    }


def audit_format_bias(
    real: list[dict], synthetic: list[dict], *, seed: int = 0, folds: int = 5, margin: float = 0.05
) -> dict:
    """Cross-validated balanced accuracy of a depth-3 tree on file metadata alone (see module doc)."""
    n_min = min(len(real), len(synthetic))
    if n_min < 2:
        raise SynthgapError(
            f"format-bias audit needs at least 2 real and 2 synthetic images, "
            f"got {len(real)} real and {len(synthetic)} synthetic"
        )
    folds = max(2, min(folds, n_min))
    cols = _columns(list(real) + list(synthetic))
    y = np.array([0] * len(real) + [1] * len(synthetic))
    acc = _cv_balanced_accuracy(np.hstack([cols[f] for f in FEATURES]), y, 3, folds, seed)
    per_feature = {f: _cv_balanced_accuracy(cols[f], y, 2, folds, seed) for f in FEATURES}
    # Small samples scatter around chance by ~0.5/sqrt(n): demand three of those as well as the margin,
    # or an unbiased set of a few dozen files is flagged one time in five.
    margin = float(max(margin, 1.5 / np.sqrt(len(y))))
    leaking = sorted((f for f in FEATURES if per_feature[f] > 0.5 + margin), key=lambda f: -per_feature[f])
    # File size at the same format, size and quality reflects content (how compressible an image is),
    # not a storage shortcut: it alone gets a note, not a warning.
    container = [f for f in FEATURES if f != "file_bytes"]
    container_acc = _cv_balanced_accuracy(np.hstack([cols[f] for f in container]), y, 3, folds, seed)
    biased = container_acc > 0.5 + margin
    metadata_leaks = [f for f in leaking if f in METADATA_FEATURES]
    if biased:
        verdict = (
            f"WARNING: file metadata alone separates real from synthetic (balanced accuracy "
            f"{acc:.2f}; leaking: {', '.join(leaking) or 'a combination of features'}). A detector "
            f"may learn the format instead of the content: re-encode both sides identically "
            f"(--normalize-format)."
            + (
                f" The presence of {', '.join(f.removeprefix('has_').replace('text', 'text chunks') for f in metadata_leaks)} "
                "alone tells the sides apart: synthgap's models decode images to pixels, so they cannot read it, "
                "but a model trained on the files as stored could."
                if metadata_leaks
                else ""
            )
        )
    elif acc > 0.5 + margin:
        verdict = (
            f"NOTE: format, dimensions, JPEG quality and metadata do not separate real from synthetic, but file size "
            f"does a little (balanced accuracy {acc:.2f}, chance 0.50): at equal encoding that reflects "
            f"image content (compressibility), not a storage shortcut."
        )
    else:
        verdict = (
            f"OK: file metadata (format, size, JPEG quality, C2PA/EXIF/XMP/text chunks) does not separate real from synthetic "
            f"(balanced accuracy {acc:.2f}, chance 0.50)."
        )
    return {
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "folds": folds,
        "balanced_accuracy": acc,
        "balanced_accuracy_without_file_size": container_acc,
        "chance": 0.5,
        "margin": margin,
        "biased": biased,
        "per_feature": per_feature,
        "leaking_features": leaking,
        "metadata_leaks": metadata_leaks,
        "real": _summary(real),
        "synthetic": _summary(synthetic),
        "verdict": verdict,
    }


def audit_files(
    real_files: list[str], synthetic_files: list[str], *, seed: int = 0, max_files: int | None = 5000
) -> dict:
    """audit_format_bias on the metadata of a seeded sample of at most max_files files per side."""
    rng = random.Random(seed)

    def sample(files: list[str]) -> list[str]:
        files = sorted(map(os.fspath, files))
        return files if max_files is None or len(files) <= max_files else sorted(rng.sample(files, max_files))

    return audit_format_bias(
        [file_metadata(p) for p in sample(real_files)], [file_metadata(p) for p in sample(synthetic_files)], seed=seed
    )
