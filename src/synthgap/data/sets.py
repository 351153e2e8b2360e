"""Labelled image sets held as tensors, and the sources they come from.

A *spec* names a source (synthgap.data.spec parses it; its KINDS name the loaders of one split here):
``cifar10`` (from the data root), a folder (``train/<class>/*`` and ``test/<class>/*``, or just
``<class>/*``), a manifest ``*.jsonl``, or a Hugging Face data set ``hf:OWNER/NAME`` / ``hf:PATH``
(synthgap.data.hub).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthgap import ANIMALS, CIFAR10_CLASSES, SynthgapError
from synthgap.data.hub import load_hub
from synthgap.data.images import IMAGE_EXTENSIONS, decode_files, pixel_hash, resize_square
from synthgap.data.spec import Spec, parse_spec
from synthgap.io import user_cache

SPLITS = ("train", "test")
HOLDOUT_SEED = 0  # fixed: a folder without given splits is always split the same way
HOLDOUT_FRACTION = 0.2


@dataclass
class ImageSet:
    """Images (N x 3 x H x W uint8) with integer labels into `classes`."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""
    domain: str = "real"  # "real" | "synthetic" | "mixed"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # source file per image, when it came from files
    # uint64 per image: the hash of its pixels at their native size (data.images.pixel_hash); None: not known
    pixel_hashes: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)  # the source (e.g. generator) of each image, when tracked

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> ImageSet:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        files = [self.files[i] for i in index.tolist()] if self.files else []
        hashes = self.pixel_hashes[index.numpy()] if self.pixel_hashes is not None else None
        sources = [self.sources[i] for i in index.tolist()] if self.sources else []
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.classes,
            name or self.name,
            self.domain,
            files=files,
            pixel_hashes=hashes,
            sources=sources,
        )

    def native_hashes(self) -> np.ndarray:
        """pixel_hashes, or for images that did not come from files at another size, the hash of the tensors."""
        if self.pixel_hashes is not None:
            return self.pixel_hashes
        return np.array([pixel_hash(x.permute(1, 2, 0).numpy()) for x in self.images], dtype=np.uint64)

    def sha256(self) -> str:
        """Content hash of pixels, labels and class names: the same data hashes the same anywhere."""
        h = hashlib.sha256(json.dumps(self.classes).encode())
        h.update(memoryview(np.ascontiguousarray(self.images.numpy())))  # the bytes themselves, not a copy of them
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "domain": self.domain,
            "n": len(self),
            "size": list(self.images.shape[-2:]),
            "class_counts": self.class_counts(),
            "skipped": len(self.skipped),
            "sha256": self.sha256(),
        }


def concat(sets: list[ImageSet], name: str, domain: str) -> ImageSet:
    classes = sets[0].classes
    if any(s.classes != classes for s in sets):
        raise SynthgapError(f"cannot combine sets with different classes: {[s.classes for s in sets]}")
    return ImageSet(
        torch.cat([s.images for s in sets]),
        torch.cat([s.labels for s in sets]),
        classes,
        name,
        domain,
        [x for s in sets for x in s.skipped],
        [f for s in sets for f in s.files] if all(s.files for s in sets) else [],
        np.concatenate([s.pixel_hashes for s in sets]) if all(s.pixel_hashes is not None for s in sets) else None,
        [x for s in sets for x in s.sources] if all(s.sources for s in sets) else [],
    )


def parse_classes(classes: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if classes is None:
        return list(ANIMALS)
    if isinstance(classes, str):
        if classes.strip().lower() in ("animals", "default"):
            return list(ANIMALS)
        if classes.strip().lower() == "all":
            return list(CIFAR10_CLASSES)
        classes = [c.strip() for c in classes.split(",")]
    out = [c for c in classes if c]
    if not out:
        raise SynthgapError("no class names given (expected e.g. 'bird,cat,deer')")
    if len(set(out)) != len(out):
        raise SynthgapError(f"class names repeat: {out}")
    return out


def data_root(root: str | os.PathLike | None = None) -> Path:
    """--root, else $SYNTHGAP_DATA, else the user cache dir."""
    if root:
        return Path(root).expanduser()
    if env := os.environ.get("SYNTHGAP_DATA"):
        return Path(env).expanduser()
    return user_cache() / "data"


# ---------------------------------------------------------------- image folders and manifests


def _list_images(folder: Path) -> list[str]:
    return sorted(
        str(p)
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _from_files(files: list[str], labels: list[int], classes: list[str], size: int, name: str, domain: str) -> ImageSet:
    decoded = decode_files(files, size)
    y = torch.tensor([labels[i] for i in decoded.kept], dtype=torch.long)
    out = ImageSet(
        decoded.images,
        y,
        classes,
        name,
        domain,
        decoded.skipped,
        [files[i] for i in decoded.kept],
        decoded.pixel_hashes,
    )
    _require_every_class(out, name)
    return out


def _require_every_class(s: ImageSet, where: str) -> None:
    if len(s) == 0:
        raise SynthgapError(f"{where}: no usable image (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    missing = [c for c, n in s.class_counts().items() if n == 0]
    if missing:
        raise SynthgapError(f"{where}: no usable image for class(es) {', '.join(missing)}")


def load_class_folders(folder: str | os.PathLike, classes: list[str], size: int = 32, domain: str = "real") -> ImageSet:
    """``folder/<class>/*.{png,jpg,...}`` for each requested class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthgapError(f"{folder}: not a folder")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in classes if c not in present]
    if missing:
        raise SynthgapError(
            f"{folder}: no sub-folder for class(es) {', '.join(missing)} (found: {', '.join(present) or 'none'}); "
            "expected one sub-folder per class name"
        )
    files, labels = [], []
    for k, c in enumerate(classes):
        f = _list_images(folder / c)
        files += f
        labels += [k] * len(f)
    return _from_files(files, labels, classes, size, str(folder), domain)


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of indices into (keep, held_out); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    y = labels.numpy()
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_held = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def load_manifest(
    path: str | os.PathLike,
    classes: list[str],
    split: str,
    size: int = 32,
    domain: str | None = None,
    generator: str | None = None,
) -> ImageSet:
    """JSONL, one image per line: path (relative to the manifest), label, split, source, generator, ...

    generator: only the lines whose `generator` field is this (one source of a manifest that mixes several)."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SynthgapError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            for key in ("path", "label"):
                if key not in row:
                    raise SynthgapError(f"{path}:{n}: missing field '{key}' (each line needs 'path' and 'label')")
            rows.append(row)
    if generator is not None:
        rows = [r for r in rows if r.get("generator") == generator]
    unknown = sorted({r["label"] for r in rows} - set(classes))
    rows = [r for r in rows if r["label"] in classes]
    has_split = any("split" in r for r in rows)
    if has_split:
        rows = [r for r in rows if r.get("split") == split]
    if domain is None:
        sources = {r.get("source", "real") for r in rows}
        domain = sources.pop() if len(sources) == 1 else "mixed"
    files = [str((path.parent / r["path"]).resolve()) for r in rows]
    for f in files:
        if not os.path.exists(f):
            raise SynthgapError(f"{path}: listed file {f} does not exist")
    labels = [classes.index(r["label"]) for r in rows]
    s = _from_files(files, labels, classes, size, f"{path}[{split}]", domain)
    if unknown:
        s.skipped.append((str(path), f"labels not among requested classes ignored: {unknown}"))
    if not has_split:
        s = _held_out_part(s, split, s.name)
    return s


# ---------------------------------------------------------------- CIFAR-10

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER_NAMES = ("cifar10-jpeg", "cifar10", "CIFAR-10-images", "cifar-10")


def _is_split_folder(p: Path) -> bool:
    return all((p / s).is_dir() for s in SPLITS)


def find_cifar10(root: Path) -> tuple[str, Path] | None:
    """Where CIFAR-10 lies under `root`: extracted batches, the tarball, or an image-folder copy."""
    if (root / "cifar-10-batches-py" / "test_batch").exists():
        return "batches", root
    if (root / CIFAR10_TARBALL).exists():
        return "tarball", root
    for name in CIFAR10_FOLDER_NAMES:
        if _is_split_folder(root / name):
            return "folder", root / name
    if _is_split_folder(root) and (root / "train" / "airplane").is_dir() | (root / "train" / "cat").is_dir():
        return "folder", root
    return None


def prepare_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> tuple[str, Path]:
    """Find CIFAR-10 under the data root, else download and MD5-check the official tarball."""
    root = data_root(root)
    found = find_cifar10(root)
    if found and found[0] != "tarball":
        return found
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive, extract_archive

    tarball = root / CIFAR10_TARBALL
    if found:  # tarball present: verify, then extract
        if not check_integrity(str(tarball), CIFAR10_MD5):
            raise SynthgapError(f"{tarball}: MD5 mismatch (expected {CIFAR10_MD5}); delete it and download again")
        extract_archive(str(tarball), str(root))
        return "batches", root
    if not download:
        raise _cifar10_missing(root, "download disabled")
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(CIFAR10_URL, str(root), filename=CIFAR10_TARBALL, md5=CIFAR10_MD5)
    except Exception as e:  # no network, proxy, disk: one clear message instead of a traceback
        (root / CIFAR10_TARBALL).unlink(missing_ok=True)
        raise _cifar10_missing(root, f"download failed: {type(e).__name__}: {e}") from None
    return "batches", root


def _cifar10_missing(root: Path, why: str) -> SynthgapError:
    looked = [root / "cifar-10-batches-py", root / CIFAR10_TARBALL] + [root / n for n in CIFAR10_FOLDER_NAMES]
    return SynthgapError(
        f"CIFAR-10 not found under data root {root} ({why}).\n"
        f"Looked for: {', '.join(str(p) for p in looked)}.\n"
        "Fix: run `synthgap data cifar10 --root DIR` with network access, put "
        f"{CIFAR10_TARBALL} in DIR, or point --root / SYNTHGAP_DATA at a folder holding an image copy "
        "(train/<class>/*, test/<class>/*)."
    )


def load_cifar10(split: str, classes: list[str], size: int = 32, root: str | os.PathLike | None = None) -> ImageSet:
    unknown = [c for c in classes if c not in CIFAR10_CLASSES]
    if unknown:
        raise SynthgapError(f"unknown CIFAR-10 class(es) {', '.join(unknown)}; known: {', '.join(CIFAR10_CLASSES)}")
    kind, where = prepare_cifar10(root)
    if kind == "folder":
        s = load_class_folders(where / split, classes, size, "real")
        s.name = f"cifar10[{split}]"
        return s
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(where), train=(split == "train"), download=False)
    except RuntimeError as e:  # torchvision's integrity check: a half-extracted or damaged copy
        raise SynthgapError(
            f"{where / 'cifar-10-batches-py'}: incomplete or corrupted CIFAR-10 batches ({e}); "
            "delete it and run `synthgap data cifar10`"
        ) from None
    targets = np.asarray(ds.targets)
    wanted = [CIFAR10_CLASSES.index(c) for c in classes]
    mask = np.isin(targets, wanted)
    data = ds.data[mask]
    hashes = np.array([pixel_hash(a) for a in data], dtype=np.uint64)  # native 32 x 32
    if size != 32:
        from PIL import Image

        data = np.stack([np.asarray(resize_square(Image.fromarray(a), size)) for a in data])
    remap = {w: k for k, w in enumerate(wanted)}
    labels = torch.tensor([remap[t] for t in targets[mask]], dtype=torch.long)
    return ImageSet(
        torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(),
        labels,
        classes,
        f"cifar10[{split}]",
        "real",
        pixel_hashes=hashes,
    )


# ---------------------------------------------------------------- specs


def load_hub_set(
    spec: str | Spec, split: str, targets: list[str], size: int = 32, domain: str = "real", *, progress: bool = True
):
    """load_hub as an ImageSet of `targets` (its classes), held out by the core's fixed split when the
    data set gives only one split."""
    decoded, labels, files, needs_holdout, left_out = load_hub(spec, split, targets, size, progress=progress)
    spec = parse_spec(spec).text
    name = f"{spec}[{split}]"
    s = ImageSet(
        decoded.images, labels, list(targets), name, domain, decoded.skipped, files, pixel_hashes=decoded.pixel_hashes
    )
    _require_every_class(s, name)
    if needs_holdout:
        s = _held_out_part(s, split, f"{spec}[{split}, held out {HOLDOUT_FRACTION:g}]")
    if left_out and (split == "train" or not needs_holdout):
        s.skipped.append((spec, f"label values not among {', '.join(targets)} left out: {left_out[:20]}"))
    return s


def load_spec(
    spec: str | Spec,
    split: str,
    classes: list[str],
    size: int = 32,
    root: str | os.PathLike | None = None,
    domain: str | None = None,
    generator: str | None = None,
) -> ImageSet:
    """Load one split ('train' or 'test') of the source a spec names.

    domain: 'real' or 'synthetic'; None takes a manifest's `source` field, else 'real'.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = parse_spec(spec)
    return spec.loader()(spec, split, classes, size, root, domain, generator)


# The loaders of synthgap.data.spec.KINDS, one split each: (spec, split, classes, size, root, domain, generator).


def cifar10_split(spec: Spec, split, classes, size, root, domain, generator) -> ImageSet:
    return load_cifar10(split, classes, size, root)


def hub_split(spec: Spec, split, classes, size, root, domain, generator) -> ImageSet:
    return load_hub_set(spec, split, classes, size, domain or "real")


def manifest_split(spec: Spec, split, classes, size, root, domain, generator) -> ImageSet:
    return load_manifest(spec.path, classes, split, size, domain, generator)


def side_split(spec: Spec, split, classes, size, root, domain, generator) -> ImageSet:
    """ROOT::NAME: the class folders of ROOT/split/NAME, taken whole."""
    folder = spec.for_split(split)[0].path
    s = load_class_folders(folder, classes, size, domain or "real")
    s.name = f"{folder}"
    return s


def folder_split(spec: Spec, split, classes, size, root, domain, generator) -> ImageSet:
    path = spec.path
    domain = domain or "real"
    if _is_split_folder(path):
        s = load_class_folders(path / split, classes, size, domain)
        s.name = f"{path}[{split}]"
        return s
    whole = load_class_folders(path, classes, size, domain)
    return _held_out_part(whole, split, f"{path}[{split}, held out {HOLDOUT_FRACTION:g}]")


def _held_out_part(whole: ImageSet, split: str, name: str) -> ImageSet:
    """The fixed stratified train or test part of a set that came without splits."""
    keep, held = holdout_split(whole.labels, HOLDOUT_FRACTION, HOLDOUT_SEED)
    part = whole.subset(keep if split == "train" else held, name)
    part.skipped = whole.skipped if split == "train" else []  # counted once, with the train split
    return part
