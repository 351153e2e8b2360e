"""Real-vs-synthetic data: two sources (any spec the core loads, or plain image folders), or one
root in the CIFAKE / DeepGuardDB style (`[train|test]/REAL|FAKE`), labelled real = 0, synthetic = 1."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.data.images import IMAGE_EXTENSIONS
from synthgap.data.sets import (HOLDOUT_FRACTION, ImageSet, _from_files, _held_out_part, _is_split_folder, concat,
                                holdout_split, load_class_folders, load_spec)
from synthgap.detect.model import CLASSES
from synthgap.train.robust import jpeg

REAL_NAMES = ("real", "0_real", "reals", "authentic", "nature")
SYNTHETIC_NAMES = ("fake", "1_fake", "fakes", "synthetic", "generated", "ai")


def _images_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_dir() and p.name.lower() in names:
            return p
    return None


def _as_side(s: ImageSet, label: int, domain: str) -> ImageSet:
    return ImageSet(s.images, torch.full((len(s),), label, dtype=torch.long), list(CLASSES), s.name, domain,
                    s.skipped, s.files, s.pixel_hashes)


def load_side(spec: str, split: str, label: int, *, classes: list[str], size: int, root=None,
              split_given: bool = False) -> ImageSet:
    """One side (real or synthetic) of one split. `spec`: 'cifar10', a manifest, a class-folder
    set (only `classes` are taken), or any folder of images (searched recursively).
    split_given: `spec` is already that split's folder (no hold-out of its own)."""
    domain = CLASSES[label]
    path = Path(spec).expanduser()
    if spec.lower() == "cifar10" or path.is_file():
        return _as_side(load_spec(spec, split, classes, size, root, domain), label, domain)
    if not path.is_dir():
        raise SynthgapError(f"{spec}: no such file or folder (expected 'cifar10', an image folder or a .jsonl manifest)")
    base = path / split if _is_split_folder(path) else path
    if all((base / c).is_dir() for c in classes):
        if split_given:  # already this split's folder: take it whole
            s = load_class_folders(base, classes, size, domain)
            s.name = f"{base}"
            return _as_side(s, label, domain)
        return _as_side(load_spec(spec, split, classes, size, root, domain), label, domain)
    files = _images_under(base)
    if not files:
        raise SynthgapError(f"{base}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    s = _from_files(files, [0] * len(files), ["image"], size, f"{base}", domain)
    if base == path and not split_given:  # no given splits: the core's fixed stratified hold-out
        s = _held_out_part(s, split, f"{path}[{split}, held out {HOLDOUT_FRACTION:g}]")
    else:
        s.name = f"{path}[{split}]"
    return _as_side(s, label, domain)


def two_class_root(data: str | Path) -> tuple[str, str]:
    """The real and synthetic folders of a CIFAKE-style root: REAL/ and FAKE/ at its top or in each split."""
    data = Path(data).expanduser()
    top = data / "train" if (data / "train").is_dir() else data
    real, fake = _child(top, REAL_NAMES), _child(top, SYNTHETIC_NAMES)
    if real is None or fake is None:
        raise SynthgapError(
            f"{data}: expected a real and a synthetic folder (one of {', '.join(REAL_NAMES)} and one of "
            f"{', '.join(SYNTHETIC_NAMES)}, any case), at its top or inside train/ and test/"
        )
    if top is data:
        return str(real), str(fake)
    return f"{data}::{real.name}", f"{data}::{fake.name}"


def _resolve(spec: str, split: str) -> tuple[str, bool]:
    """'ROOT::NAME' (a side of a two-class root with splits) -> (ROOT/split/NAME, True)."""
    if "::" in spec:
        root, name = spec.split("::", 1)
        folder = Path(root) / split / name
        if not folder.is_dir():
            raise SynthgapError(f"{folder}: missing (the {split} split of {root} needs its own {name}/ folder)")
        return str(folder), True
    return spec, False


def _cap(s: ImageSet, per_side: int | None, seed: int) -> ImageSet:
    """At most `per_side` images of each label, drawn with a fixed seed."""
    if not per_side:
        return s
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(CLASSES)):
        idx = np.flatnonzero(s.labels.numpy() == label)
        keep.append(np.sort(rng.choice(idx, min(per_side, len(idx)), replace=False)))
    return s.subset(np.concatenate(keep))


@dataclass
class DetectorData:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    specs: dict
    audit: object | None = None  # the synthgap.audit.Audit of the sides' splits (None: dedupe off)


def load_detector_data(*, real: str | None = None, synthetic: str | None = None, data: str | None = None,
                       classes: list[str], size: int = 32, root=None, val_fraction: float = 0.1,
                       train_size: int | None = None, test_size: int | None = None, seed: int = 0,
                       normalize_format: int | None = None, dedupe: str = "drop", progress: bool = True) -> DetectorData:
    """Train / validation / test sets. The validation split (stratified, seeded) comes out of
    train and is where the threshold is chosen; test is never looked at before the end.

    dedupe: the data audit of both sides' whole splits first (synthgap.audit.apply_dedupe); the caps
    and the validation split are drawn from what it leaves.
    normalize_format: re-encode every image (both sides) as JPEG at this quality, so neither
    side keeps a format of its own.
    """
    from synthgap.audit import AuditPart, apply_dedupe, check_dedupe

    check_dedupe(dedupe)
    if data:
        if real or synthetic:
            raise SynthgapError("give either --data (one root with real and fake folders) or --real and --synthetic")
        real, synthetic = two_class_root(data)
    if not real or not synthetic:
        raise SynthgapError("the detector needs both a real and a synthetic source (--real and --synthetic, or --data)")
    if not 0 < val_fraction < 1:
        raise SynthgapError(f"config field 'val_fraction': expected a value in (0, 1), got {val_fraction}")
    parts = []
    for split in ("train", "test"):
        for label, spec in enumerate((real, synthetic)):
            folder, given = _resolve(spec, split)
            side = load_side(folder, split, label, classes=classes, size=size, root=root, split_given=given)
            parts.append(AuditPart(spec.replace("::", "/"), split, CLASSES[label], side))
    sets, audit = apply_dedupe(parts, dedupe, progress=progress)
    joined = {split: concat([s for p, s in zip(parts, sets) if p.split == split], f"detector[{split}]", "mixed")
              for split in ("train", "test")}
    train = _cap(joined["train"], train_size, seed)
    test = _cap(joined["test"], test_size, seed)
    keep, held = holdout_split(train.labels, val_fraction, seed)
    train, val = train.subset(keep, "detector[train]"), train.subset(held, "detector[val]")
    if normalize_format:
        for s in (train, val, test):
            s.images = jpeg(s.images, int(normalize_format))
    return DetectorData(train, val, test, {"real": real, "synthetic": synthetic}, audit)
