"""Real-vs-synthetic data for a detector, labelled real = 0, synthetic = 1: each side one or more
*sources* (synthgap.data.sides: any spec the core loads, or plain image folders; a root with a folder per
generator, or a manifest whose lines name several generators, is one source each), or one root in the
CIFAKE / DeepGuardDB style (`[train|test]/REAL|FAKE`). Training draws each side's sources in equal shares,
so a large source does not drown a small one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.audit import AuditPart, apply_dedupe, check_dedupe
from synthgap.data.sets import ImageSet, concat, holdout_split
from synthgap.data.sides import CLASSES, Source, data_sides, load_side, parse_sides
from synthgap.train.robust import jpeg


def equal_shares(s: ImageSet, n: int | None, rng: np.random.Generator, *, repeat: bool) -> np.ndarray:
    """Indices into `s` that draw each label's sources in equal shares: per label, n images (None: as many
    as it has) in equal quotas per source. A source with fewer images than its quota is repeated
    (repeat=True: the standard oversampling of a small class) or taken whole (repeat=False)."""
    labels = s.labels.numpy()
    sources = np.asarray(s.sources) if s.sources else np.zeros(len(s), dtype=object)
    picks = []
    for label in np.unique(labels):
        in_label = np.flatnonzero(labels == label)
        names = sorted(set(sources[in_label].tolist()))
        total = len(in_label) if n is None else n
        quotas = [total // len(names) + (k < total % len(names)) for k in range(len(names))]
        for name, quota in zip(names, quotas):
            pool = in_label[sources[in_label] == name]
            if quota <= len(pool):
                picks.append(rng.choice(pool, quota, replace=False))
            elif repeat:
                picks.append(np.r_[pool, rng.choice(pool, quota - len(pool), replace=True)])
            else:
                picks.append(pool)
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def source_counts(sets: dict[str, ImageSet]) -> dict:
    """{side: {source: {split: distinct images, split_drawn: with repeats, split_sha256: of the distinct images}}}."""
    out: dict[str, dict] = {}
    for split, part in sets.items():
        sources = np.asarray(part.sources)
        for src in sorted(set(part.sources)):
            members = np.flatnonzero(sources == src)
            distinct = np.unique(part.native_hashes()[members], return_index=True)[1]
            side = CLASSES[int(part.labels[members[0]])]
            row = out.setdefault(side, {}).setdefault(src, {})
            row[split], row[f"{split}_drawn"] = len(distinct), len(members)
            row[f"{split}_sha256"] = part.subset(members[np.sort(distinct)]).sha256()
    return out


@dataclass
class DetectorData:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    specs: dict  # {"real": [entries], "synthetic": [entries]}, as given (parse_sources reads them back)
    audit: object | None = None  # the synthgap.audit.Audit of the sides' splits (None: dedupe off)
    sources: dict = field(default_factory=dict)  # source_counts of train, val and test


@dataclass
class LoadedSources:
    """Every source's audited train and test splits, loaded once: detectors are assembled from them."""

    sets: dict[tuple[str, str], ImageSet]  # (source name, split) -> images, labelled by side
    sides: list[list[Source]]  # [real sources, synthetic sources]
    specs: dict
    audit: object | None


def load_sources(
    real,
    synthetic,
    *,
    data: str | None = None,
    classes: list[str],
    size: int = 32,
    root=None,
    dedupe: str = "drop",
    split: str | None = None,
    progress: bool = True,
) -> LoadedSources:
    """Load the train and test splits (or only `split`) of every source of both sides, then audit them all
    together (synthgap.audit.apply_dedupe with `dedupe`)."""
    check_dedupe(dedupe)
    if data:
        if real or synthetic:
            raise SynthgapError("give either --data (one root with real and fake folders) or --real and --synthetic")
        real, synthetic = data_sides(data)
    sides = parse_sides(real, synthetic)
    if not sides[0] or not sides[1]:
        raise SynthgapError("the detector needs both a real and a synthetic source (--real and --synthetic, or --data)")
    parts = []
    for part_split in (split,) if split else ("train", "test"):
        for label, sources in enumerate(sides):
            for src in sources:
                side = load_side(
                    src.spec,
                    part_split,
                    label,
                    classes=classes,
                    size=size,
                    root=root,
                    source=src.name,
                    generator=src.generator,
                )
                parts.append(AuditPart(src.name, part_split, CLASSES[label], side))
    sets, audit = apply_dedupe(parts, dedupe, progress=progress)
    entries = [[x] if isinstance(x, str) else list(x) for x in (real, synthetic)]
    return LoadedSources(
        {(p.set, p.split): s for p, s in zip(parts, sets)}, sides, {"real": entries[0], "synthetic": entries[1]}, audit
    )


def assemble(
    loaded: LoadedSources,
    *,
    synthetic: list[str] | None = None,
    real: list[str] | None = None,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    normalize_format: int | None = None,
) -> DetectorData:
    """Train / validation / test sets of the `real` sources and the `synthetic` ones (default: all of a side).

    train_size caps each side before the validation split, test_size each side of test; within a side the
    sources come in equal shares (training repeats the images of a source too small for its share)."""
    if not 0 < val_fraction < 1:
        raise SynthgapError(f"config field 'val_fraction': expected a value in (0, 1), got {val_fraction}")
    names = (real or [s.name for s in loaded.sides[0]]) + (synthetic or [s.name for s in loaded.sides[1]])
    joined = {
        split: concat([loaded.sets[n, split] for n in names], f"detector[{split}]", "mixed")
        for split in ("train", "test")
    }
    rng = np.random.default_rng(seed)
    pool = joined["train"].subset(equal_shares(joined["train"], train_size, rng, repeat=False))
    strata = pool.labels * len(names) + torch.tensor([names.index(x) for x in pool.sources], dtype=torch.long)
    keep, held = holdout_split(strata, val_fraction, seed)
    train, val = pool.subset(keep, "detector[train]"), pool.subset(held, "detector[val]")
    train = train.subset(equal_shares(train, None, rng, repeat=True), "detector[train]")
    test = joined["test"].subset(equal_shares(joined["test"], test_size, rng, repeat=False), "detector[test]")
    if normalize_format:
        for s in (train, val, test):
            s.images = jpeg(s.images, int(normalize_format))
    return DetectorData(
        train, val, test, loaded.specs, loaded.audit, source_counts({"train": train, "val": val, "test": test})
    )


def load_detector_data(
    *,
    real=None,
    synthetic=None,
    data: str | None = None,
    classes: list[str],
    size: int = 32,
    root=None,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    normalize_format: int | None = None,
    dedupe: str = "drop",
    progress: bool = True,
) -> DetectorData:
    """Train / validation / test sets. The validation split (stratified by side and source, seeded)
    comes out of train and is where the threshold is chosen; test is never looked at before the end.

    real, synthetic: one spec or several (see parse_sources: NAME=SPEC, a folder per generator, ...).
    dedupe: the data audit of every source's whole splits first (synthgap.audit.apply_dedupe); the caps,
    the validation split and the equal shares per source are drawn from what it leaves (see assemble).
    normalize_format: re-encode every image (both sides) as JPEG at this quality, so neither
    side keeps a format of its own.
    """
    if not 0 < val_fraction < 1:  # before minutes of decoding
        raise SynthgapError(f"config field 'val_fraction': expected a value in (0, 1), got {val_fraction}")
    loaded = load_sources(
        real, synthetic, data=data, classes=classes, size=size, root=root, dedupe=dedupe, progress=progress
    )
    return assemble(
        loaded,
        val_fraction=val_fraction,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        normalize_format=normalize_format,
    )


def detector_data(cfg, *, real=None, synthetic=None, data: str | None = None, root=None, progress: bool = True):
    """load_detector_data with the sizes, caps, seed, format normalisation and dedupe of a DetectorConfig."""
    return load_detector_data(
        real=real,
        synthetic=synthetic,
        data=data,
        classes=cfg.classes,
        size=cfg.image_size,
        root=root,
        val_fraction=cfg.val_fraction,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        seed=cfg.seed,
        normalize_format=cfg.normalize_quality if cfg.normalize_format else None,
        dedupe=cfg.dedupe,
        progress=progress,
    )
