"""The parts of the data sets `synthgap audit` is given: every spec the other commands take."""

from __future__ import annotations

from synthgap.audit.result import AuditPart
from synthgap.data.sets import SPLITS, load_spec
from synthgap.data.sides import (
    CLASSES,
    REAL_NAMES,
    SYNTHETIC_NAMES,
    load_side,
    named_child,
    two_class_root,
)
from synthgap.data.spec import Spec, parse_spec


def _domain(spec: Spec, synthetic: bool) -> str | None:
    if synthetic:
        return "synthetic"
    if spec.kind == "manifest":
        return None  # a manifest's own `source` field decides
    if spec.kind == "folder" and (spec.path / "manifest.jsonl").is_file():
        return "synthetic"  # a `synthgap generate` folder
    return "real"


def load_parts(
    spec: str | Spec, *, classes: list[str], size: int, root=None, synthetic: bool = False, reference: bool = False
) -> list[AuditPart]:
    """The train and test parts of one spec: 'cifar10', a manifest, a class-folder set (with or without
    train/ and test/; without, the fixed 20% hold-out), a folder of images (searched recursively), or a
    root with REAL/ and FAKE/ folders (CIFAKE style: two sets, one per domain, labelled real/synthetic)."""
    spec = parse_spec(spec)
    if spec.kind == "hf":  # labels mapped onto real / synthetic: a set per side, as a CIFAKE-style root
        sides = [k for k, side in enumerate(CLASSES) if side in spec.targets]
        if not sides:
            domain = _domain(spec, synthetic)
            return [
                AuditPart(spec.text, split, domain, load_spec(spec, split, classes, size, root, domain), reference)
                for split in SPLITS
            ]
        return [
            AuditPart(
                f"{spec.without_options}/{CLASSES[k]}",
                split,
                CLASSES[k],
                load_side(spec, split, k, classes=classes, size=size, root=root),
                reference,
            )
            for split in SPLITS
            for k in sides
        ]
    path = spec.path
    top = path / "train" if (path / "train").is_dir() else path
    if spec.kind == "folder" and named_child(top, REAL_NAMES) and named_child(top, SYNTHETIC_NAMES):
        parts = []
        for label, side in enumerate(parse_spec(s) for s in two_class_root(path)):
            name = f"{spec.text.rstrip('/')}/{side.option('folder') if side.kind == 'side' else side.path.name}"
            for split in SPLITS:
                s = load_side(side, split, label, classes=classes, size=size, root=root)
                parts.append(AuditPart(name, split, s.domain, s, reference))
        return parts
    domain = _domain(spec, synthetic)
    has_folders = spec.kind == "folder" and any(p.is_dir() and not p.name.startswith(".") for p in top.iterdir())
    parts = []
    for split in SPLITS:
        if spec.kind != "folder" or has_folders:  # a kind's own loader (synthgap.data.spec.KINDS)
            s = load_spec(spec, split, classes, size, root, domain)
        else:  # a folder of images alone: one unlabelled side
            s = load_side(spec, split, 1 if domain == "synthetic" else 0, classes=classes, size=size, root=root)
        parts.append(AuditPart(spec.text, split, s.domain, s, reference))
    return parts
