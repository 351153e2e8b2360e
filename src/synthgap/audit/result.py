"""An audit of the parts (set, split, domain) a run uses: every twin pair, where it lies, whether the
labels agree, counts per kind; cached by the data's hashes; and the `dedupe` rule experiments apply."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthgap import SynthgapError
from synthgap.audit.find import CORRELATION, HASH, AuditSettings, find_twins
from synthgap.audit.page import write_page
from synthgap.audit.summary import KINDS
from synthgap.data.sets import ImageSet
from synthgap.io import write_json

log = logging.getLogger("synthgap")

AUDIT_VERSION = 1
DEDUPE_MODES = ("drop", "warn", "off")
TRAINING_SPLITS = ("train", "val")  # a run learns from (or selects on) these; "test" is what it is measured on


@dataclass
class AuditPart:
    """One split of one data set, as a run uses it."""

    set: str  # the set's name (its spec)
    split: str  # train | val | test | all
    domain: str  # real | synthetic | mixed
    data: ImageSet
    reference: bool = False  # only compared with the other parts (`synthgap audit --against`)

    @property
    def name(self) -> str:
        return f"{self.set}[{self.split}]"

    @property
    def role(self) -> str:
        return "train" if self.split in TRAINING_SPLITS else "test" if self.split == "test" else "other"


def pair_kind(a: AuditPart, b: AuditPart) -> str:
    if a.domain != b.domain:
        if "real" in (a.domain, b.domain) and "synthetic" in (a.domain, b.domain):
            real = a if a.domain == "real" else b
            return "memorisation" if real.role == "train" else "real_synthetic"
        return "other"
    if a.set != b.set:
        return "across_sets"
    if a.split == b.split:
        return {"train": "within_train", "test": "within_test"}.get(a.role, "within_set")
    return "train_test" if {a.role, b.role} == {"train", "test"} else "other"


@dataclass
class Audit:
    """Every twin pair of the audited parts. Pair arrays index into the parts: (part, index) per side."""

    parts: list[AuditPart]
    settings: AuditSettings
    a_part: np.ndarray
    a_index: np.ndarray
    b_part: np.ndarray
    b_index: np.ndarray
    exact: np.ndarray  # bool per pair
    hamming: np.ndarray  # phash distance (0 for exact twins)
    correlation: np.ndarray  # aligned correlation (1 for exact twins)
    seconds: float = 0.0
    candidates: int = 0
    from_cache: bool = False
    removed: dict = field(default_factory=dict)  # filled by dedupe(): part name -> {count, why}

    def __len__(self) -> int:
        return len(self.a_part)

    def kinds(self) -> list[str]:
        table = {
            (p, q): pair_kind(self.parts[p], self.parts[q])
            for p in range(len(self.parts))
            for q in range(len(self.parts))
        }
        return [table[p, q] for p, q in zip(self.a_part.tolist(), self.b_part.tolist())]

    def label(self, part: int, index: int) -> str:
        s = self.parts[part].data
        return s.classes[int(s.labels[index])]

    def path(self, part: int, index: int) -> str | None:
        s = self.parts[part].data
        return s.files[index] if s.files else None

    def same_labels(self) -> np.ndarray:
        return np.array(
            [
                self.label(p, i) == self.label(q, j)
                for p, i, q, j in zip(
                    self.a_part.tolist(), self.a_index.tolist(), self.b_part.tolist(), self.b_index.tolist()
                )
            ],
            dtype=bool,
        )

    def leaks(self) -> np.ndarray:
        """Pairs of a test image and a training image (any set, any domain)."""
        role = np.array([p.role for p in self.parts])
        a, b = role[self.a_part], role[self.b_part]
        return ((a == "train") & (b == "test")) | ((a == "test") & (b == "train"))

    def test_images_with_training_twin(self) -> dict[str, int]:
        """Per test part: how many distinct images have a twin in a training part."""
        leaks = self.leaks()
        out = {}
        for k, part in enumerate(self.parts):
            if part.role != "test" or part.reference:
                continue
            idx = np.r_[self.a_index[leaks & (self.a_part == k)], self.b_index[leaks & (self.b_part == k)]]
            out[part.name] = int(len(np.unique(idx)))
        return out

    def order(self) -> np.ndarray:
        """Pairs worst first: leaks, label conflicts, exact before near, then by correlation."""
        kind_rank = np.array([KINDS.index(k) for k in self.kinds()])
        return np.lexsort((-self.correlation, ~self.exact, kind_rank, self.same_labels(), ~self.leaks()))

    def summary(self) -> dict:
        """Counts for environment.json, reports and the terminal (no pairs)."""
        kinds = self.kinds()
        same = self.same_labels()
        counts = {
            m: dict(Counter(k for k, e in zip(kinds, self.exact) if e == (m == "exact"))) for m in ("exact", "near")
        }
        return {
            "images": int(sum(len(p.data) for p in self.parts)),
            "parts": [
                {
                    "name": p.name,
                    "set": p.set,
                    "split": p.split,
                    "domain": p.domain,
                    "n": len(p.data),
                    "reference": p.reference,
                    "skipped": len(p.data.skipped),
                }
                for p in self.parts
            ],
            "pairs": {"exact": int(self.exact.sum()), "near": int((~self.exact).sum())},
            "counts": counts,
            "label_conflicts": int((~same).sum()),
            "test_images_with_training_twin": self.test_images_with_training_twin(),
            "removed": self.removed,
            "seconds": round(self.seconds, 1),
            "from_cache": self.from_cache,
        }

    def to_json(self, max_pairs: int | None = 5000) -> dict:
        """audit.json: the method, the summary, every skipped file, and the pairs worst first."""
        kinds, same, leaks = self.kinds(), self.same_labels(), self.leaks()
        order = self.order()
        listed = order if max_pairs is None else order[:max_pairs]

        def side(p: int, i: int) -> dict:
            part = self.parts[p]
            return {
                "part": part.name,
                "set": part.set,
                "split": part.split,
                "domain": part.domain,
                "index": i,
                "path": self.path(p, i),
                "label": self.label(p, i),
            }

        pairs = [
            {
                "kind": kinds[k],
                "match": "exact" if self.exact[k] else "near",
                "leak": bool(leaks[k]),
                "same_label": bool(same[k]),
                "hamming": int(self.hamming[k]),
                "correlation": round(float(self.correlation[k]), 4),
                "a": side(int(self.a_part[k]), int(self.a_index[k])),
                "b": side(int(self.b_part[k]), int(self.b_index[k])),
            }
            for k in listed.tolist()
        ]
        return {
            "version": AUDIT_VERSION,
            "method": {
                "exact": "identical pixels at the native size (data.images.pixel_hash)",
                "hash": HASH,
                "radius": self.settings.radius,
                "confirmed_by": CORRELATION,
                "min_correlation": self.settings.min_correlation,
                "candidate_pairs": self.candidates,
            },
            **self.summary(),
            "skipped_files": {
                p.name: [{"path": f, "reason": r} for f, r in p.data.skipped] for p in self.parts if p.data.skipped
            },
            "pairs_listed": len(pairs),
            "pair_list": pairs,
        }

    def write(self, folder: str | Path) -> Path:
        """folder/audit.json and folder/audit.html (thumbnails of the pairs, worst first)."""
        folder = Path(folder)
        write_json(folder / "audit.json", self.to_json())
        return write_page(self, folder / "audit.html")

    def twins_of(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into `part`, the other side's part) for every pair touching it."""
        a = self.a_part == part
        b = self.b_part == part
        return np.r_[self.a_index[a], self.b_index[b]], np.r_[self.b_part[a], self.a_part[b]]


# ---------------------------------------------------------------- running, with a cache


def _key(parts: list[AuditPart], settings: AuditSettings) -> str:
    h = hashlib.sha256(
        json.dumps(
            {"v": AUDIT_VERSION, "radius": settings.radius, "min_correlation": settings.min_correlation}
        ).encode()
    )
    for p in parts:
        h.update(json.dumps([p.set, p.split, p.domain, p.reference, p.data.classes]).encode())
        h.update(p.data.sha256().encode())
        h.update(p.data.native_hashes().tobytes())
        h.update("\0".join(p.data.files).encode())
    return h.hexdigest()


def _cache_file(key: str) -> Path:
    from synthgap.data.images import cache_dir

    return cache_dir() / "audit" / f"{key}.json"


def audit(
    parts: list[AuditPart], settings: AuditSettings | None = None, *, progress: bool = True, use_cache: bool = True
) -> Audit:
    """Find every exact and near twin pair among `parts` (all at one image size); pairs between two
    reference parts are left out. Cached by the parts' data hashes: the same data is audited once."""
    settings = settings or AuditSettings()
    settings.check()
    sizes = {tuple(p.data.images.shape[-2:]) for p in parts if len(p.data)}
    if len(sizes) > 1:
        raise SynthgapError(f"audit: the parts have different image sizes {sorted(sizes)}; decode them at one size")
    key = _key(parts, settings)
    cached = _cache_file(key)
    if use_cache and cached.exists():
        try:
            d = json.loads(cached.read_text())
            cols = {k: np.asarray(v) for k, v in d["pairs"].items()}
            log.info(
                "audit: %s images, read from the cache (%s)", f"{sum(len(p.data) for p in parts):,}", cached.name[:16]
            )
            return Audit(
                parts,
                settings,
                cols["a_part"].astype(np.int64),
                cols["a_index"].astype(np.int64),
                cols["b_part"].astype(np.int64),
                cols["b_index"].astype(np.int64),
                cols["exact"].astype(bool),
                cols["hamming"].astype(np.int64),
                cols["correlation"].astype(np.float64),
                d["seconds"],
                d["candidates"],
                from_cache=True,
            )
        except (OSError, ValueError, KeyError):  # a damaged cache entry is recomputed, never trusted
            log.warning("audit cache file %s unreadable; auditing again", cached)
    t0 = time.perf_counter()
    native = np.concatenate([p.data.native_hashes() for p in parts]) if parts else np.empty(0, np.uint64)
    part_of = np.concatenate([np.full(len(p.data), k) for k, p in enumerate(parts)]) if parts else np.empty(0, int)
    index_of = np.concatenate([np.arange(len(p.data)) for p in parts]) if parts else np.empty(0, int)
    twins = find_twins([p.data.images for p in parts], native, settings, progress)
    i = np.r_[twins.exact[:, 0], twins.near[:, 0]].astype(np.int64)
    j = np.r_[twins.exact[:, 1], twins.near[:, 1]].astype(np.int64)
    exact = np.r_[np.ones(len(twins.exact), bool), np.zeros(len(twins.near), bool)]
    hamming = np.r_[np.zeros(len(twins.exact), np.int64), twins.hamming].astype(np.int64)
    corr = np.r_[np.ones(len(twins.exact)), twins.correlation]
    reference = np.array([p.reference for p in parts], dtype=bool)
    keep = ~(reference[part_of[i]] & reference[part_of[j]]) if len(parts) else np.zeros(0, bool)
    result = Audit(
        parts,
        settings,
        part_of[i][keep],
        index_of[i][keep],
        part_of[j][keep],
        index_of[j][keep],
        exact[keep],
        hamming[keep],
        corr[keep],
        time.perf_counter() - t0,
        twins.candidates,
    )
    if use_cache:
        write_json(
            cached,
            {
                "version": AUDIT_VERSION,
                "seconds": result.seconds,
                "candidates": result.candidates,
                "pairs": {
                    k: getattr(result, k).tolist()
                    for k in ("a_part", "a_index", "b_part", "b_index", "exact", "hamming", "correlation")
                },
            },
        )
    return result


# ---------------------------------------------------------------- dedupe: what a run drops


def check_dedupe(mode: str, where: str = "dedupe") -> None:
    if mode not in DEDUPE_MODES:
        raise SynthgapError(f"config field '{where}': expected one of {', '.join(DEDUPE_MODES)}, got '{mode}'")


def dedupe(result: Audit) -> list[ImageSet]:
    """The parts' sets with `dedupe: drop` applied: from each test part, the images with a twin in any
    training part; from each training part, the later copy of every twin pair inside it (the first is
    kept). Records what went where in result.removed; returns one set per part, in order."""
    role = [p.role for p in result.parts]
    out = []
    for k, part in enumerate(result.parts):
        drop: set[int] = set()
        why = ""
        if role[k] == "test":
            idx, other = result.twins_of(k)
            drop = (
                set(idx[np.array([role[o] == "train" for o in other.tolist()], dtype=bool)].tolist())
                if len(idx)
                else set()
            )
            why = "a twin in a training split"
        elif role[k] == "train":
            inside = (result.a_part == k) & (result.b_part == k)
            first, second = (
                np.minimum(result.a_index, result.b_index)[inside],
                np.maximum(result.a_index, result.b_index)[inside],
            )
            for i, j in sorted(zip(first.tolist(), second.tolist())):
                if i not in drop:  # a copy of an image already dropped keeps its place
                    drop.add(j)
            why = "a second copy inside the split"
        if drop:
            keep = np.setdiff1d(np.arange(len(part.data)), np.fromiter(drop, dtype=np.int64))
            result.removed[part.name] = {"removed": len(drop), "kept": int(len(keep)), "why": why}
            out.append(part.data.subset(keep, part.data.name))
            out[-1].skipped = part.data.skipped
        else:
            out.append(part.data)
    return out


def apply_dedupe(parts: list[AuditPart], mode: str, *, progress: bool = True) -> tuple[list[ImageSet], Audit | None]:
    """What every experiment does before training: audit (unless mode is 'off'), warn in one line
    about test images with training twins, and with 'drop' return the deduplicated sets."""
    check_dedupe(mode)
    if mode == "off":
        return [p.data for p in parts], None
    result = audit(parts, progress=progress)
    leaked = {k: v for k, v in result.test_images_with_training_twin().items() if v}
    if leaked:
        sizes = {p.name: len(p.data) for p in parts}
        action = "dropped from the test splits (dedupe: drop)" if mode == "drop" else "kept (dedupe: warn)"
        log.warning(
            "audit: test images with a twin in a training split: %s; %s",
            ", ".join(f"{v} of {sizes[k]:,} in {k}" for k, v in leaked.items()),
            action,
        )
    sets = dedupe(result) if mode == "drop" else [p.data for p in parts]
    return sets, result


def audit_record(result: Audit | None, mode: str) -> dict:
    """What environment.json and the reports keep of an experiment's audit: its counts and its mode."""
    return {"dedupe": mode, **(result.summary() if result else {"audited": False})}
