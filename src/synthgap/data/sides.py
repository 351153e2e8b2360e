"""The two sides of real-vs-synthetic data, labelled real = 0, synthetic = 1 (CLASSES): each side one or
more *sources* (any spec the core loads, or plain image folders; a root with a folder per generator, or a
manifest whose lines name several generators, is one source each), or one root in the CIFAKE / DeepGuardDB
style (`[train|test]/REAL|FAKE`), or one hf: data set whose label column says real or synthetic."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgap import SynthgapError
from synthgap.data.hub import is_hub_spec, parse_hub_spec
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
            and not (named_child(path, REAL_NAMES) and named_child(path, SYNTHETIC_NAMES))
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
    data = Path(data).expanduser()
    if not data.is_dir():
        raise SynthgapError(
            f"{data}: no such folder (--data expects a root with real and fake folders, or an hf: data set)"
        )
    top = data / "train" if (data / "train").is_dir() else data
    real, fake = named_child(top, REAL_NAMES), named_child(top, SYNTHETIC_NAMES)
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


def resolve_side(spec: str, split: str) -> tuple[str, bool]:
    """'ROOT::NAME' (a side of a two-class root with splits) -> (ROOT/split/NAME, True)."""
    if "::" in spec and not is_hub_spec(spec):
        root, name = spec.split("::", 1)
        folder = Path(root) / split / name
        if not folder.is_dir():
            raise SynthgapError(f"{folder}: missing (the {split} split of {root} needs its own {name}/ folder)")
        return str(folder), True
    return spec, False
