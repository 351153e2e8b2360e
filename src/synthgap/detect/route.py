"""Several detectors, one answer per image: each image goes to the detector whose training domain holds it.

A `DetectorSet` holds detector bundles in a stated order (the order they were given; `synthgap serve
RUN_DIR` gives the main job's 32 px detector first, then its photo detector). For each image it asks
them in that order and takes the first whose training domain holds the image (`domain.inside`). The
cheap check of the file's metadata against each bundle's `domain` record (synthgap.detect.domain.inside)
comes first, so a detector's model runs only on images it may answer; a record that its detector still
calls outside passes the image on to the next one. An image that no detector covers is answered
"outside the training domain", with one line naming every detector tried and why each refused.

With a single detector nothing is routed: it answers every image as before (an image outside its domain
keeps its unreliable probability). Every record gains `answered_by` (the detector's name, backbone and
input chain, its test AUC and, when the bundle records them, its probe figures) and `routing` (the
order and what each detector tried said). The CLI (`synthgap detect`), the JSON API and the Check page
all answer through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthgap import SynthgapError
from synthgap.detect.domain import VERDICT_OUTSIDE, inside
from synthgap.detect.model import DetectorBundle, load_bundle


@dataclass
class Member:
    """One detector of a set: its public name (detector.json's `name`, else its folder's name), the bundle,
    and the folder it came from (never shown to anyone: callers derive their own public names from it)."""

    name: str
    bundle: DetectorBundle
    folder: Path | None = None

    def summary(self) -> dict:
        """What an answer says about the detector that gave it: name, backbone, input chain, test figures,
        and its probes when the bundle records them (absent in bundles made before them)."""
        meta = self.bundle.meta
        metrics = meta.get("metrics") or {}
        out = {
            "name": self.name,
            "backbone": (meta.get("architecture") or {}).get("backbone"),
            "input": input_phrase(meta.get("preprocessing") or {}),
            "test_auc": _number(metrics.get("auc")),
            "test_accuracy": _number(metrics.get("accuracy")),
        }
        probes = public_probes(meta.get("probes"))
        if probes:
            out["probes"] = probes
        return out


def input_phrase(preprocessing: dict) -> str:
    """A bundle's input chain in a few words: 'windows at native scale' or '32 px thumbnails'."""
    if preprocessing.get("input") == "crop":
        return "windows at native scale"
    size = preprocessing.get("image_size")
    return f"{size} px thumbnails" if size else "thumbnails"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def public_probes(probes) -> dict | None:
    """The parts of a bundle's `probes` record an answer shows (metadata: balanced_accuracy, verdict;
    content: auc, accuracy, image_size; credited: a sentence), each only when present and well-typed."""
    if not isinstance(probes, dict):
        return None
    out: dict = {}
    for part, fields in (("metadata", ("balanced_accuracy",)), ("content", ("auc", "accuracy", "image_size"))):
        rec = probes.get(part)
        if not isinstance(rec, dict):
            continue
        kept = {k: _number(rec.get(k)) for k in fields if _number(rec.get(k)) is not None}
        if part == "metadata" and isinstance(rec.get("verdict"), str):
            kept["verdict"] = rec["verdict"]
        if kept:
            out[part] = kept
    if isinstance(probes.get("credited"), str) and probes["credited"].strip():
        out["credited"] = probes["credited"].strip()
    return out or None


def _size_meta(image) -> dict:
    """File metadata known from the pixels alone (no bytes): the size, which is what routes most images."""
    return {"format": "", "width": image.width, "height": image.height, "jpeg_quality": 0}


class DetectorSet:
    """Detector bundles in the order they are asked; see the module docstring."""

    def __init__(self, members: list[Member]):
        if not members:
            raise SynthgapError("a detector set needs at least one detector")
        self.members = list(members)

    @classmethod
    def load(cls, folders: list[str | os.PathLike], device="cpu") -> DetectorSet:
        """Load bundle folders, in this order. Each is named by detector.json's `name`, else its folder's name;
        two of the same name are told apart by their parent folder (pipeline-a/detector)."""
        folders = [Path(f) for f in folders]
        bundles = [load_bundle(f, device) for f in folders]
        short = [str(b.meta.get("name") or f.resolve().name) for b, f in zip(bundles, folders)]
        names = [n if short.count(n) == 1 else "/".join(f.resolve().parts[-2:]) for n, f in zip(short, folders)]
        names = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]  # still alike: numbered
        return cls([Member(n, b, f) for n, b, f in zip(names, bundles, folders)])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def only(self, name: str) -> DetectorSet:
        """The set of one member, by name (a client asking for one detector)."""
        for m in self.members:
            if m.name == name:
                return DetectorSet([m])
        raise SynthgapError(f"unknown detector '{name}'; this set has: {', '.join(self.names)}")

    # -------------------------------------------------------------- routing

    def route(self, metas: list[dict | None], run: Callable[[int, list[int]], list[dict]]) -> list[dict]:
        """One record per image whose file metadata is `metas[i]`. `run(k, indices)` gives member k's
        records (DetectorBundle.assess or assess_files) of those images; it is called only with images
        whose metadata member k's domain holds (with one member: every image)."""
        n, alone = len(metas), len(self.members) == 1
        records: list[dict | None] = [None] * n
        tried: list[list[dict]] = [[] for _ in range(n)]
        answerer: list[int | None] = [None] * n
        pending = list(range(n))
        for k, member in enumerate(self.members):
            if not pending:
                break
            take = []
            for i in pending:
                ok, why = (True, []) if alone else inside(member.bundle.domain, metas[i])
                if ok:
                    take.append(i)
                else:
                    tried[i].append({"name": member.name, "inside": False, "why": why})
            for i, rec in zip(take, run(k, take) if take else []):
                domain = rec.get("domain") or {"inside": True, "why": []}
                tried[i].append({"name": member.name, "inside": bool(domain["inside"]), "why": list(domain["why"])})
                if alone or "error" in rec or domain["inside"]:
                    records[i], answerer[i] = rec, k
            pending = [i for i in pending if records[i] is None]
        order = self.names
        out = []
        for i in range(n):
            rec = records[i] if records[i] is not None else refusal(tried[i])
            if "error" not in rec:
                k = answerer[i]
                rec["answered_by"] = self.members[k].summary() if k is not None else None
                rec["routing"] = {"order": order, "tried": tried[i]}
            out.append(rec)
        return out

    def assess(
        self,
        images: list,
        metas: list[dict | None],
        band: float = 0.0,
        predict: Callable[[int], Callable] | None = None,
    ) -> list[dict]:
        """Records of upright RGB PIL images whose file metadata are `metas` (None: not known; with several
        detectors the pixel size then routes). `predict(k)`: member k's predict function (e.g. a
        micro-batcher), else the bundle's own."""
        if len(self.members) > 1:
            metas = [m if m is not None else _size_meta(im) for im, m in zip(images, metas)]

        def run(k: int, idx: list[int]) -> list[dict]:
            bundle = self.members[k].bundle
            views = [bundle.views(images[i]) for i in idx]
            return bundle.assess(views, [metas[i] for i in idx], band, predict=predict(k) if predict else None)

        return self.route(list(metas), run)

    def assess_files(self, paths: list[str]) -> list[dict]:
        """assess_files of the detector each file goes to, in the order of `paths`; a file that is not a
        readable image gets {"error": reason}."""
        from synthgap.detect.audit import file_metadata

        metas: list[dict | None] = []
        for p in paths:
            try:
                metas.append(file_metadata(p))
            except (SynthgapError, OSError, ValueError):
                metas.append(None)  # goes to the first detector, whose assess_files names the problem
        return self.route(metas, lambda k, idx: self.members[k].bundle.assess_files([paths[i] for i in idx]))


def refusal(tried: list[dict]) -> dict:
    """The record of an image that no detector covers: which were tried and why each refused, in one line."""
    reasons = [f"{t['name']} ({'; '.join(t['why']) or 'outside'})" for t in tried]
    return {
        "p_synthetic": None,
        "p_range": None,
        "threshold": None,
        "domain": {"inside": False, "why": reasons},
        "verdict": VERDICT_OUTSIDE,
        "rule": "outside_domain",
        "reliable": False,
        "why": f"outside the training domain of every detector: {', '.join(reasons)}",
    }


def answered_line(rec: dict) -> str:
    """'by NAME (backbone, input)' for a routed record, or 'by none of A, B' when no detector covers it."""
    by = rec.get("answered_by")
    if by:
        return f"by {by['name']} ({by['backbone']}, {by['input']})"
    return "by none of " + ", ".join((rec.get("routing") or {}).get("order", []))
