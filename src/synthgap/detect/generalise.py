"""How far a detector's answers carry: any bundle evaluated on any labelled data without retraining
(`synthgap detector evaluate`), and the generalisation matrix over synthetic sources (`synthgap
detector cross`): one detector per source, one per left-out source, one on all, each tested on every
source; the headline is the mean over sources a detector never saw."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from synthgap import SynthgapError
from synthgap.config import from_dict
from synthgap.data.sets import concat
from synthgap.detect.config import DetectorConfig
from synthgap.detect.data import LoadedSources, assemble, equal_shares, load_sources, parse_sides
from synthgap.detect.evaluate import binary_metrics, curves, per_source_rows, selective, set_robustness
from synthgap.detect.model import DetectorBundle, load_bundle
from synthgap.io import environment, write_json


def _file_domain(bundle: DetectorBundle, files: list[str]) -> dict:
    """How many of `files` lie outside the bundle's training domain, and why (the most common reasons)."""
    from collections import Counter

    from synthgap.detect.audit import file_metadata
    from synthgap.detect.domain import inside

    if not files or not bundle.domain:
        return {"checked": 0, "outside": None, "note": "no files, or a bundle without a domain record"}
    why = Counter()
    outside = 0
    for f in files:
        ok, reasons = inside(bundle.domain, file_metadata(f))
        outside += not ok
        why.update(r.split(" ", 1)[0] for r in reasons)  # "size 3000x2000 px, ..." -> "size"
    return {"checked": len(files), "outside": outside, "outside_fraction": outside / len(files), "reasons": dict(why)}


def _training_parts(bundle: DetectorBundle, classes: list[str]):
    """The bundle's own training splits as audit reference parts, when its sources can be loaded here."""
    from synthgap.audit import AuditPart
    from synthgap.data.sides import load_side

    specs = bundle.meta.get("specs") or {}
    if not isinstance(specs.get("real"), list):
        return [], "the bundle does not name its training sources in a form this version reads"
    parts = []
    try:
        # parse_sides, as load_sources named them: a name on both sides comes out renamed the same way
        for label, (side, sources) in enumerate(
            zip(("real", "synthetic"), parse_sides(specs["real"], specs["synthetic"]))
        ):
            for src in sources:
                s = load_side(
                    src.spec,
                    "train",
                    label,
                    classes=classes,
                    size=bundle.image_size,
                    source=src.name,
                    generator=src.generator,
                )
                parts.append(AuditPart(f"training:{src.name}", "train", side, s, reference=True))
    except SynthgapError as e:
        return [], f"its training data could not be loaded here ({e})"
    return parts, None


def evaluate_bundle(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    real=None,
    synthetic=None,
    data: str | None = None,
    split: str = "all",
    dedupe: str = "drop",
    root=None,
    progress: bool = True,
) -> dict:
    """Every test figure of `detector train` for a saved bundle on other data, at the bundle's own threshold
    (never re-tuned here): accuracy, AUC, AP, per source, robustness, how much of the data lies outside the
    bundle's training domain; the data audited against the bundle's training data first (`dedupe: drop`
    removes the images with a twin there)."""
    from synthgap.audit import AuditPart, apply_dedupe, audit_record
    from synthgap.detect.report import write_evaluation_report

    bundle = load_bundle(bundle_dir)
    cfg = from_dict(DetectorConfig, bundle.meta.get("config") or {})
    classes = list(cfg.classes)
    if split not in ("test", "train", "all"):
        raise SynthgapError(f"--split: expected test, train or all, got '{split}'")
    loaded = load_sources(
        real,
        synthetic,
        data=data,
        classes=classes,
        size=bundle.image_size,
        root=root,
        dedupe="off",
        split=None if split == "all" else split,
        progress=progress,
    )
    names = [s.name for side in loaded.sides for s in side]
    splits = ("train", "test") if split == "all" else (split,)
    parts = [
        AuditPart(
            n,
            "test",
            "real" if k < len(loaded.sides[0]) else "synthetic",
            concat([loaded.sets[n, sp] for sp in splits], n, "real" if k < len(loaded.sides[0]) else "synthetic"),
        )
        for k, n in enumerate(names)
    ]
    reference, missing = _training_parts(bundle, classes) if dedupe != "off" else ([], None)
    sets, audit = apply_dedupe(parts + reference, dedupe, progress=progress)
    test = concat(sets[: len(parts)], "evaluate", "mixed")
    if not len(test):
        raise SynthgapError("nothing left to evaluate on (every image has a twin in the bundle's training data)")
    y = test.labels.numpy()
    p = bundle.predict_set(test, progress=progress).numpy()
    t = bundle.threshold
    overall = binary_metrics(y, p, t)
    per_source = per_source_rows(y, p, test.sources, t)
    inside = None
    from synthgap.detect.domain import content_check, content_scores

    known = content_check(bundle.domain)
    if bundle.bank is not None and known:  # the content check, as in use
        inside = content_scores(bundle.set_features(test), bundle.bank, known["k"]).numpy() <= known["threshold"]
    out = Path(out)
    result = {
        "bundle": str(bundle_dir),
        "threshold": t,
        "split": split,
        "test": overall,
        "curves": curves(y, p),
        "per_source": per_source,
        "selective": selective(y, p, t, inside),
        **dict(zip(("robustness", "robustness_on"), set_robustness(bundle, test, y, p))),
        "domain": _file_domain(bundle, test.files),
        "trained_on": bundle.meta.get("sources"),
        "audit_against_training_data": missing or ("checked" if reference else "dedupe: off"),
    }
    env = environment()
    env.update(
        {
            "bundle": str(bundle_dir),
            "specs": loaded.specs,
            "data": {"test": test.describe()},
            "audit": audit_record(audit, dedupe),
        }
    )
    if audit:
        audit.write(out / "audit")
    write_json(out / "environment.json", env)
    write_json(out / "evaluation.json", result)
    write_evaluation_report(out, result, bundle.meta, env)
    return result


# ---------------------------------------------------------------- the generalisation matrix


def detector_sets(sources: list[str]) -> dict[str, list[str]]:
    """{detector name: its synthetic sources}: one per source, one without each source, one on all."""
    out = {f"only {s}": [s] for s in sources}
    if len(sources) > 2:
        out.update({f"without {s}": [x for x in sources if x != s] for s in sources})
    out["all"] = list(sources)
    return out


def _done(folder: Path, cfg: DetectorConfig, data) -> dict | None:
    from synthgap.detect.train import run_folder

    meta_file = folder / "detector.json"
    if not meta_file.exists() or not run_folder(folder).matches(cfg, data={"train": data.train.describe()}):
        return None
    return json.loads(meta_file.read_text())


def _cross_cell(
    cell: tuple[str, str, list[str]],
    *,
    loaded: LoadedSources,
    real_test,
    tests: dict,
    cfg: DetectorConfig,
    out: Path,
    progress: bool,
) -> list[dict]:
    """One cell of the matrix (backbone, detector name, its synthetic sources): its detector trained (or read
    back, when finished with the same config and data), tested on every source; its rows of cross.json."""
    from synthgap.detect.train import run_detector

    backbone, name, chosen = cell
    bcfg = dataclasses.replace(cfg, backbone=backbone)
    data = assemble(
        loaded,
        synthetic=chosen,
        val_fraction=cfg.val_fraction,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        seed=cfg.seed,
    )
    folder = out / backbone / name.replace(" ", "-")
    meta = _done(folder, bcfg, data) or run_detector(data, bcfg, folder, progress=progress, audit_page=False)
    bundle = load_bundle(folder)
    p_real = bundle.predict_set(real_test).numpy()  # each test part predicted once
    rows = []
    for target, test in tests.items():
        y = np.r_[np.zeros(len(real_test), int), np.ones(len(test), int)]
        m = binary_metrics(y, np.r_[p_real, bundle.predict_set(test).numpy()], bundle.threshold)
        rows.append(
            {
                "backbone": backbone,
                "detector": name,
                "trained_on": chosen,
                "test_source": target,
                "seen": target in chosen,
                "accuracy": m["accuracy"],
                "auc": m["auc"],
                "recall_synthetic": m["per_class"]["synthetic"]["recall"],
                "recall_real": m["per_class"]["real"]["recall"],
                "threshold": bundle.threshold,
                "train_seconds": meta["training"]["seconds"],
            }
        )
    return rows


def cross_matrix(
    loaded: LoadedSources,
    cfg: DetectorConfig,
    backbones: list[str],
    out: str | Path,
    *,
    progress: bool = True,
    ray: str | None = None,
    ray_cpus: float = 1,
    ray_gpus: float = 0,
) -> dict:
    """Train every detector of detector_sets for each backbone (resumable: a finished one with the same
    config and data is read back), test each on every synthetic source's test split (against all real test
    images, at the detector's own threshold); write cross.json, cross.md, heatmaps and report.html.

    ray: train the cells (backbone x detector) as Ray tasks of `ray_cpus` CPUs and `ray_gpus` GPUs each on
    that cluster (synthgap.cluster.connect); `out` must then lie on storage every node sees."""
    import functools

    from synthgap.audit import audit_record
    from synthgap.cluster import run_tasks
    from synthgap.detect.report import write_cross_report
    from synthgap.detect.train import check_detector_config

    out = Path(out)
    sources = [s.name for s in loaded.sides[1]]
    if len(sources) < 2:
        raise SynthgapError(
            f"the generalisation matrix needs at least 2 synthetic sources, got {sources}; give "
            "--synthetic NAME=SPEC several times, or a folder with a sub-folder per generator"
        )
    for b in backbones:
        check_detector_config(dataclasses.replace(cfg, backbone=b))
    rng = np.random.default_rng(cfg.seed)

    def capped(x):  # cfg.test_size images of each test part (the real side's sources in equal shares)
        return x.subset(equal_shares(x, cfg.test_size, rng, repeat=False), x.name)

    real_test = capped(concat([loaded.sets[s.name, "test"] for s in loaded.sides[0]], "real[test]", "real"))
    tests = {s: capped(loaded.sets[s, "test"]) for s in sources}
    cells = [(b, name, chosen) for b in backbones for name, chosen in detector_sets(sources).items()]
    per_cell = run_tasks(
        functools.partial(_cross_cell, cfg=cfg, out=out, progress=progress and ray is None),
        cells,
        ray=ray,
        shared={"loaded": loaded, "real_test": real_test, "tests": tests},
        cpus=ray_cpus,
        gpus=ray_gpus,
        desc="detector cross",
        describe=lambda cell: f"{cell[0]} {cell[1]}",
    )
    rows = [row for cell_rows in per_cell for row in cell_rows]
    summary = cross_summary(rows)
    result = {
        "sources": sources,
        "real": [s.name for s in loaded.sides[0]],
        "rows": rows,
        "summary": summary,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "sizes": {
            "train_per_side": cfg.train_size,
            "test_real": len(real_test),
            "test_per_source": {s: len(t) for s, t in tests.items()},
        },
    }
    if loaded.audit:
        loaded.audit.write(out / "audit")  # once for the matrix: every detector's data comes from these sets
    result["audit"] = audit_record(loaded.audit, cfg.dedupe)
    write_json(out / "cross.json", result)
    write_cross_report(out, result)
    return result


def cross_summary(rows: list[dict]) -> list[dict]:
    """Per backbone: the mean accuracy and AUC on unseen sources (leave-one-out detectors on their left-out
    source; single-source detectors on every other source), and on seen ones."""
    out = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        loo = [r for r in mine if r["detector"].startswith("without ") and not r["seen"]]
        single = [r for r in mine if r["detector"].startswith("only ") and not r["seen"]]
        seen = [r for r in mine if r["seen"]]
        everything = [r for r in mine if r["detector"] == "all"]

        def mean(rs, k):
            return float(np.mean([r[k] for r in rs])) if rs else None

        out.append(
            {
                "backbone": backbone,
                "unseen_leave_one_out_accuracy": mean(loo, "accuracy"),
                "unseen_leave_one_out_auc": mean(loo, "auc"),
                "unseen_single_source_accuracy": mean(single, "accuracy"),
                "unseen_single_source_auc": mean(single, "auc"),
                "seen_accuracy": mean(seen, "accuracy"),
                "seen_auc": mean(seen, "auc"),
                "all_sources_accuracy": mean(everything, "accuracy"),
                "all_sources_auc": mean(everything, "auc"),
            }
        )
    return out
