"""The two sides of real-vs-synthetic data, labelled real = 0, synthetic = 1 (CLASSES): each side one or
more *sources* (any spec the core loads, or plain image folders; a root with a folder per generator, or a
manifest whose lines name several generators, is one source each), or one root in the CIFAKE / DeepGuardDB
style (`[train|test]/REAL|FAKE`), or one hf: data set whose label column says real or synthetic."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgap import SynthgapError
from synthgap.data.images import IMAGE_EXTENSIONS
from synthgap.data.sets import (
    HOLDOUT_FRACTION,
    ImageSet,
    _from_files,
    _held_out_part,
    _is_split_folder,
    load_class_folders,
    load_hub_set,
    load_spec,
)
from synthgap.data.spec import DATA_HELP, Spec, is_hub_spec, missing, parse_spec, side_spec

CLASSES = ["real", "synthetic"]  # label 0 and label 1
REAL_NAMES = ("real", "0_real", "reals", "authentic", "nature")
SYNTHETIC_NAMES = ("fake", "1_fake", "fakes", "synthetic", "generated", "ai")

log = logging.getLogger("synthgap")


def images_under(folder: Path) -> list[str]:
    """Every image file in `folder` or below it (hidden ones left out), sorted."""
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def named_child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first sub-folder of `folder` whose name, in lower case, is one of `names` (e.g. REAL_NAMES)."""
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
    spec: Spec
    generator: str | None = None  # only this `generator` of a manifest that mixes several


def _looks_like_a_set(folder: Path) -> bool:
    return any(p.is_dir() for p in folder.iterdir() if not p.name.startswith("."))


def parse_sources(specs: str | Spec | list[str | Spec] | tuple[str | Spec, ...] | None) -> list[Source]:
    """`NAME=SPEC` or `SPEC` (named after its folder or file) per entry. A folder whose sub-folders are
    data sets of their own (no images at its top, no train/test split, no REAL/FAKE) is a root with a
    folder per generator: one source each. A manifest whose lines name several `generator`s: one each."""
    import json

    if specs is None:
        return []
    out: list[Source] = []
    for entry in [specs] if isinstance(specs, (str, Spec)) else specs:
        spec = parse_spec(entry)
        name, label, path = spec.name, spec.label, spec.path
        if spec.kind == "manifest":
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
            spec.kind == "folder"
            and not _is_split_folder(path)
            and not (named_child(path, REAL_NAMES) and named_child(path, SYNTHETIC_NAMES))
        ):
            subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if (
                subs
                and not any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
                and all(_looks_like_a_set(p) for p in subs)
            ):
                out += [Source(f"{label}/{p.name}" if name else p.name, parse_spec(str(p))) for p in subs]
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
        if src.spec.kind == "hf":
            return ""
        return Path(os.path.abspath(Path(src.spec.text).expanduser())).parent.name

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
    spec: str | Spec,
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
    set (only `classes` are taken), or any folder of images (searched recursively); ROOT::NAME: the
    NAME/ folder of this split of ROOT, taken whole.
    split_given: `spec` is already that split's folder (no hold-out of its own).
    source: the name every image is tagged with (ImageSet.sources); generator: see Source."""
    domain = CLASSES[label]
    spec = parse_spec(spec)
    if spec.kind == "hf":  # its label column mapped onto real / synthetic picks this side, else the classes
        targets = [domain] if spec.targets & set(CLASSES) else classes
        return _as_side(load_hub_set(spec, split, targets, size, domain), label, domain, source)
    if spec.kind == "side":
        spec, split_given = spec.for_split(split)
    if spec.kind != "folder":  # a kind with no folder of its own to search: its loader (spec.KINDS)
        return _as_side(load_spec(spec, split, classes, size, root, domain, generator), label, domain, source)
    path = spec.path
    base = path / split if _is_split_folder(path) else path
    if all((base / c).is_dir() for c in classes):
        if split_given:  # already this split's folder: take it whole
            s = load_class_folders(base, classes, size, domain)
            s.name = f"{base}"
            return _as_side(s, label, domain, source)
        return _as_side(load_spec(spec, split, classes, size, root, domain), label, domain, source)
    files = images_under(base)
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
    path = Path(data).expanduser()
    if not path.is_dir():
        raise missing(str(data), DATA_HELP) if not path.exists() else SynthgapError(f"{data}: expected {DATA_HELP}")
    data = path
    top = data / "train" if (data / "train").is_dir() else data
    real, fake = named_child(top, REAL_NAMES), named_child(top, SYNTHETIC_NAMES)
    if real is None or fake is None:
        raise SynthgapError(
            f"{data}: expected a real and a synthetic folder (one of {', '.join(REAL_NAMES)} and one of "
            f"{', '.join(SYNTHETIC_NAMES)}, any case), at its top or inside train/ and test/"
        )
    if top is data:
        return str(real), str(fake)
    return side_spec(data, real.name), side_spec(data, fake.name)


def hub_sides(data: str | Spec) -> tuple[str, str]:
    """Both sides of one hf: data set whose label column says real or synthetic (its map names both)."""
    spec = parse_spec(data)
    if set(CLASSES) - spec.targets:
        raise SynthgapError(
            f"{spec}: --data with an hf: set needs its labels mapped onto both sides, e.g. "
            f"{spec.without_options}?label=COLUMN&real=VALUE&synthetic=VALUE"
        )
    return tuple(dataclasses.replace(spec, name=side).written for side in CLASSES)


def data_sides(data: str) -> tuple[str, str]:
    """--data: the real and the synthetic spec of one source that holds both (hub_sides, two_class_root)."""
    if is_hub_spec(data):
        return hub_sides(data)
    return two_class_root(data)
