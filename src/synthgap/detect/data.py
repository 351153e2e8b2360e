"""Real-vs-synthetic data, labelled real = 0, synthetic = 1: each side one or more *sources* (any spec
the core loads, or plain image folders; a root with a folder per generator, or a manifest whose lines
name several generators, is one source each), or one root in the CIFAKE / DeepGuardDB style
(`[train|test]/REAL|FAKE`). Training draws each side's sources in equal shares, so a large source
does not drown a small one."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.data.hub import is_hub_spec, load_hub_set, parse_hub_spec
from synthgap.data.images import IMAGE_EXTENSIONS
from synthgap.data.sets import (
    HOLDOUT_FRACTION,
    ImageSet,
    _from_files,
    _held_out_part,
    _is_split_folder,
    concat,
    holdout_split,
    load_class_folders,
    load_spec,
)
from synthgap.detect.model import CLASSES
from synthgap.train.robust import jpeg

REAL_NAMES = ("real", "0_real", "reals", "authentic", "nature")
SYNTHETIC_NAMES = ("fake", "1_fake", "fakes", "synthetic", "generated", "ai")

log = logging.getLogger("synthgap")


def _images_under(folder: Path) -> list[str]:
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_dir() and p.name.lower() in names:
            return p
    return None


def _as_side(s: ImageSet, label: int, domain: str, source: str | None = None) -> ImageSet:
    return ImageSet(
        s.images,
        torch.full((len(s),), label, dtype=torch.long),
        list(CLASSES),
        s.name,
        domain,
        s.skipped,
        s.files,
        s.pixel_hashes,
        [source] * len(s) if source else s.sources,
    )


@dataclass(frozen=True)
class Source:
    """One origin of images on one side: a generator, or a real data set."""

    name: str
    spec: str
    generator: str | None = None  # only this `generator` of a manifest that mixes several


def _looks_like_a_set(folder: Path) -> bool:
    return any(p.is_dir() for p in folder.iterdir() if not p.name.startswith("."))


def parse_sources(specs: str | list[str] | tuple[str, ...] | None) -> list[Source]:
    """`NAME=SPEC` or `SPEC` (named after its folder or file) per entry. A folder whose sub-folders are
    data sets of their own (no images at its top, no train/test split, no REAL/FAKE) is a root with a
    folder per generator: one source each. A manifest whose lines name several `generator`s: one each."""
    import json

    if specs is None:
        return []
    out: list[Source] = []
    for entry in [specs] if isinstance(specs, str) else specs:
        named = re.match(r"([\w.+-]+)=(.+)", entry)  # not an hf: spec's options (hf:X?real=0)
        name, spec = named.groups() if named and not Path(entry).exists() else (None, entry)
        if is_hub_spec(spec):
            out.append(Source(name or parse_hub_spec(spec).name.rstrip("/").rsplit("/", 1)[-1], spec))
            continue
        path = Path(spec).expanduser()
        label = name or (path.stem if path.is_file() else path.name) or spec
        if path.is_file() and path.suffix == ".jsonl":
            generators = set()
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    generators.add(json.loads(line).get("generator") or "")
                except (json.JSONDecodeError, AttributeError):  # load_manifest names the bad line later
                    pass
            generators = sorted(generators - {""})
            if len(generators) > 1:
                out += [Source(f"{label}:{g}", spec, g) for g in generators]
                continue
        elif (
            path.is_dir()
            and not _is_split_folder(path)
            and not (_child(path, REAL_NAMES) and _child(path, SYNTHETIC_NAMES))
        ):
            subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if (
                subs
                and not any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
                and all(_looks_like_a_set(p) for p in subs)
            ):
                out += [Source(f"{label}/{p.name}" if name else p.name, str(p)) for p in subs]
                continue
        out.append(Source(label, spec))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SynthgapError(f"source names repeat: {names}; name them with NAME=SPEC")
    return out


def parse_sides(real, synthetic) -> list[list[Source]]:
    """[real sources, synthetic sources] (parse_sources of each). Names need only be unique within a side, as
    the flags tell the sides apart; but every table downstream (the loaded splits, the audit, per-source
    counts and metrics) is keyed by name alone, so a name on both sides (two folders called `test`) is made
    unique here: prefixed with its parent folder (`cifar10-jpeg/test`, `cifake-sd14-fake/test`) when those
    differ, else with its side (`real:test`, `synthetic:test`)."""
    sides = [parse_sources(real), parse_sources(synthetic)]
    both = {s.name for s in sides[0]} & {s.name for s in sides[1]}
    if not both:
        return sides

    def parent(src: Source) -> str:
        if is_hub_spec(src.spec):
            return ""
        return Path(os.path.abspath(Path(src.spec).expanduser())).parent.name

    renamed = [[], []]
    for name in sorted(both):
        pair = [next(s for s in side if s.name == name) for side in sides]
        parents = [parent(s) for s in pair]
        if all(parents) and parents[0] != parents[1]:
            new_names = [f"{p}/{name}" for p in parents]
        else:
            new_names = [f"{side}:{name}" for side in CLASSES]
        for k, (src, new_name) in enumerate(zip(pair, new_names)):
            renamed[k].append(new_name)
            sides[k] = [dataclasses.replace(s, name=new_name) if s is src else s for s in sides[k]]
    names = [s.name for side in sides for s in side]
    if len(set(names)) != len(names):
        raise SynthgapError(
            f"source names repeat across the sides: {[s.name for s in sides[0]]} and {[s.name for s in sides[1]]}; "
            "name them with NAME=SPEC"
        )
    log.info(
        "sources named on both sides, renamed to tell them apart: real %s, synthetic %s",
        ", ".join(renamed[0]),
        ", ".join(renamed[1]),
    )
    return sides


def load_side(
    spec: str,
    split: str,
    label: int,
    *,
    classes: list[str],
    size: int,
    root=None,
    split_given: bool = False,
    source: str | None = None,
    generator: str | None = None,
) -> ImageSet:
    """One side (real or synthetic) of one split. `spec`: 'cifar10', a manifest, a class-folder
    set (only `classes` are taken), or any folder of images (searched recursively).
    split_given: `spec` is already that split's folder (no hold-out of its own).
    source: the name every image is tagged with (ImageSet.sources); generator: see Source."""
    domain = CLASSES[label]
    if is_hub_spec(spec):  # its label column mapped onto real / synthetic picks this side, else the classes
        targets = [domain] if parse_hub_spec(spec).targets & set(CLASSES) else classes
        return _as_side(load_hub_set(spec, split, targets, size, domain), label, domain, source)
    path = Path(spec).expanduser()
    if spec.lower() == "cifar10" or path.is_file():
        return _as_side(load_spec(spec, split, classes, size, root, domain, generator), label, domain, source)
    if not path.is_dir():
        raise SynthgapError(
            f"{spec}: no such file or folder (expected 'cifar10', an image folder or a .jsonl manifest)"
        )
    base = path / split if _is_split_folder(path) else path
    if all((base / c).is_dir() for c in classes):
        if split_given:  # already this split's folder: take it whole
            s = load_class_folders(base, classes, size, domain)
            s.name = f"{base}"
            return _as_side(s, label, domain, source)
        return _as_side(load_spec(spec, split, classes, size, root, domain), label, domain, source)
    files = _images_under(base)
    if not files:
        raise SynthgapError(f"{base}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    s = _from_files(files, [0] * len(files), ["image"], size, f"{base}", domain)
    if base == path and not split_given:  # no given splits: the core's fixed stratified hold-out
        s = _held_out_part(s, split, f"{path}[{split}, held out {HOLDOUT_FRACTION:g}]")
    else:
        s.name = f"{path}[{split}]"
    return _as_side(s, label, domain, source)


def two_class_root(data: str | Path) -> tuple[str, str]:
    """The real and synthetic folders of a CIFAKE-style root: REAL/ and FAKE/ at its top or in each split."""
    data = Path(data).expanduser()
    if not data.is_dir():
        raise SynthgapError(
            f"{data}: no such folder (--data expects a root with real and fake folders, or an hf: data set)"
        )
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


def hub_sides(data: str) -> tuple[str, str]:
    """Both sides of one hf: data set whose label column says real or synthetic (its map names both)."""
    if set(CLASSES) - parse_hub_spec(data).targets:
        raise SynthgapError(
            f"{data}: --data with an hf: set needs its labels mapped onto both sides, e.g. "
            f"{data.partition('?')[0]}?label=COLUMN&real=VALUE&synthetic=VALUE"
        )
    return f"real={data}", f"synthetic={data}"


def _resolve(spec: str, split: str) -> tuple[str, bool]:
    """'ROOT::NAME' (a side of a two-class root with splits) -> (ROOT/split/NAME, True)."""
    if "::" in spec and not is_hub_spec(spec):
        root, name = spec.split("::", 1)
        folder = Path(root) / split / name
        if not folder.is_dir():
            raise SynthgapError(f"{folder}: missing (the {split} split of {root} needs its own {name}/ folder)")
        return str(folder), True
    return spec, False


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
    from synthgap.audit import AuditPart, apply_dedupe, check_dedupe

    check_dedupe(dedupe)
    if data:
        if real or synthetic:
            raise SynthgapError("give either --data (one root with real and fake folders) or --real and --synthetic")
        real, synthetic = hub_sides(data) if is_hub_spec(data) else two_class_root(data)
    sides = parse_sides(real, synthetic)
    if not sides[0] or not sides[1]:
        raise SynthgapError("the detector needs both a real and a synthetic source (--real and --synthetic, or --data)")
    parts = []
    for part_split in (split,) if split else ("train", "test"):
        for label, sources in enumerate(sides):
            for src in sources:
                folder, given = _resolve(src.spec, part_split)
                side = load_side(
                    folder,
                    part_split,
                    label,
                    classes=classes,
                    size=size,
                    root=root,
                    split_given=given,
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
    val_fraction: float = 0.1,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    normalize_format: int | None = None,
) -> DetectorData:
    """Train / validation / test sets of the real sources and the `synthetic` ones (default: all).

    train_size caps each side before the validation split, test_size each side of test; within a side the
    sources come in equal shares (training repeats the images of a source too small for its share)."""
    if not 0 < val_fraction < 1:
        raise SynthgapError(f"config field 'val_fraction': expected a value in (0, 1), got {val_fraction}")
    names = [s.name for s in loaded.sides[0]] + (synthetic or [s.name for s in loaded.sides[1]])
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
