"""The parts of the data sets `synthgap audit` is given: every spec the other commands take."""

from __future__ import annotations

from pathlib import Path

from synthgap import SynthgapError
from synthgap.audit.result import AuditPart
from synthgap.data.hub import is_hub_spec, parse_hub_spec
from synthgap.data.sets import SPLITS, load_spec
from synthgap.data.sides import (
    CLASSES,
    REAL_NAMES,
    SYNTHETIC_NAMES,
    load_side,
    named_child,
    resolve_side,
    two_class_root,
)


def _domain(spec: str, synthetic: bool) -> str | None:
    if synthetic:
        return "synthetic"
    if is_hub_spec(spec):
        return "real"
    path = Path(spec).expanduser()
    if path.is_file():
        return None  # a manifest's own `source` field decides
    if (path / "manifest.jsonl").is_file():
        return "synthetic"  # a `synthgap generate` folder
    return "real"


def load_parts(
    spec: str, *, classes: list[str], size: int, root=None, synthetic: bool = False, reference: bool = False
) -> list[AuditPart]:
    """The train and test parts of one spec: 'cifar10', a manifest, a class-folder set (with or without
    train/ and test/; without, the fixed 20% hold-out), a folder of images (searched recursively), or a
    root with REAL/ and FAKE/ folders (CIFAKE style: two sets, one per domain, labelled real/synthetic)."""
    if is_hub_spec(spec):  # labels mapped onto real / synthetic: a set per side, as a CIFAKE-style root
        sides = [k for k, side in enumerate(CLASSES) if side in parse_hub_spec(spec).targets]
        if not sides:
            domain = _domain(spec, synthetic)
            return [
                AuditPart(spec, split, domain, load_spec(spec, split, classes, size, root, domain), reference)
                for split in SPLITS
            ]
        return [
            AuditPart(
                f"{spec.partition('?')[0]}/{CLASSES[k]}",
                split,
                CLASSES[k],
                load_side(spec, split, k, classes=classes, size=size, root=root),
                reference,
            )
            for split in SPLITS
            for k in sides
        ]
    path = Path(spec).expanduser()
    if spec.lower() != "cifar10" and not path.exists():
        raise SynthgapError(
            f"{spec}: no such file or folder (expected 'cifar10', an image folder or a .jsonl manifest)"
        )
    top = path / "train" if (path / "train").is_dir() else path
    if path.is_dir() and named_child(top, REAL_NAMES) and named_child(top, SYNTHETIC_NAMES):
        parts = []
        for label, side in enumerate(two_class_root(path)):
            name = f"{spec.rstrip('/')}/{(side.split('::', 1)[1] if '::' in side else Path(side).name)}"
            for split in SPLITS:
                folder, given = resolve_side(side, split)
                s = load_side(folder, split, label, classes=classes, size=size, root=root, split_given=given)
                parts.append(AuditPart(name, split, s.domain, s, reference))
        return parts
    domain = _domain(spec, synthetic)
    has_folders = path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in top.iterdir())
    parts = []
    for split in SPLITS:
        if spec.lower() == "cifar10" or path.is_file() or has_folders:
            s = load_spec(spec, split, classes, size, root, domain)
        else:  # a folder of images alone: one unlabelled side
            s = load_side(spec, split, 1 if domain == "synthetic" else 0, classes=classes, size=size, root=root)
        parts.append(AuditPart(spec, split, s.domain, s, reference))
    return parts
