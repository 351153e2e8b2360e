"""The transfer experiments: train one architecture on real, synthetic and mixed sets and test
every model on held-out real and synthetic images.

Each (training set, seed) is a *run*; a run tested on one domain is an *arm* (real→real,
synthetic→real, ...). Every run has the same architecture, preprocessing and budget (images
processed), so the arms differ only in their data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.audit import DEDUPE_MODES, audit_record
from synthgap.config import dump_yaml
from synthgap.data.sets import HOLDOUT_SEED, SPLITS, ImageSet, concat, load_spec, parse_classes
from synthgap.experiments.config import TransferConfig
from synthgap.io import environment, write_json, write_text
from synthgap.runs import RunDir, identity_hash
from synthgap.train.classifier import META as CLASSIFIER_META
from synthgap.train.classifier import classifier_meta, save_classifier
from synthgap.train.evaluate import evaluate
from synthgap.train.loop import CHECKPOINT, check_config, fit

log = logging.getLogger("synthgap")
DOMAINS = ("real", "synthetic")


@dataclass
class TrainingSet:
    """How one run's training set is drawn: n_real real images plus n_synthetic synthetic ones."""

    name: str
    train_domain: str
    n_real: int
    n_synthetic: int
    epochs_of_own_size: bool = False  # budget: epochs x its own size, not the study's shared budget

    @property
    def synthetic_fraction(self) -> float:
        return self.n_synthetic / (self.n_real + self.n_synthetic)


def stratified_sample(labels: torch.Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices, spread over classes in proportion to their counts."""
    y = labels.numpy()
    if n >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    for k in np.argsort(-(counts / counts.sum() * n - quota))[: n - quota.sum()]:
        quota[k] += 1
    picks = [rng.choice(np.flatnonzero(y == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def plan_training_sets(cfg: TransferConfig, n_real: int, n_synthetic: int) -> tuple[int, list[TrainingSet]]:
    """The training sets of the study. A `train_size` larger than the data allows (e.g. after the audit
    removed duplicates) is lowered to the largest that every fraction can draw, with a warning."""

    def fits(size: int) -> bool:
        return all(size - round(size * f) <= n_real and round(size * f) <= n_synthetic for f in cfg.fractions)

    size = cfg.train_size or min(n_real, n_synthetic)
    if not fits(size):
        wanted, lo, hi = size, 0, size  # fits() only turns false as the size grows: bisect for the largest
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        size = lo
        least = max(2, len(cfg.classes))
        if size < least:
            raise SynthgapError(
                f"too few training images to train: the fractions {cfg.fractions} need training sets "
                f"of at least {least} images (one per class); there are {n_real} real and "
                f"{n_synthetic} synthetic training images (after the audit)"
            )
        log.warning(
            "train_size %d capped at %d: the most every training set can draw from %d real and %d synthetic "
            "training images",
            wanted,
            size,
            n_real,
            n_synthetic,
        )
    sets = []
    for f in cfg.fractions:
        n_s = int(round(size * f))
        domain = "real" if n_s == 0 else "synthetic" if n_s == size else "mixed"
        sets.append(TrainingSet(domain if domain != "mixed" else f"mix{round(f * 100):d}", domain, size - n_s, n_s))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise SynthgapError(
            f"config field 'fractions': {cfg.fractions} gives repeated training sets {names} at train_size {size}"
        )
    for k in cfg.extra_synthetic:
        n_s = min(int(round(k * n_real)), n_synthetic)
        sets.append(TrainingSet(f"real+{k:g}xsynthetic", f"real+{k:g}xsynthetic", n_real, n_s))
    if cfg.real_baseline:
        n = min(cfg.real_baseline, n_real)
        if n < cfg.real_baseline:
            log.warning(
                "config field 'real_baseline': %d is more than the %d real training images; using %d",
                cfg.real_baseline,
                n_real,
                n,
            )
        sets.append(TrainingSet(f"real-{n}", "real-baseline", n, 0, epochs_of_own_size=True))
    return size, sets


def check_transfer_config(cfg: TransferConfig) -> None:
    """Checks that need no data: a clear error before anything is loaded or trained."""
    check_config(cfg.train)
    problems = [
        ("seeds", not cfg.seeds, "give at least one seed"),
        ("fractions", not all(0 <= f <= 1 for f in cfg.fractions), "every fraction between 0 and 1"),
        ("extra_synthetic", not all(k > 0 for k in cfg.extra_synthetic), "positive multiples"),
        ("fractions", not cfg.fractions and not cfg.extra_synthetic, "at least one training set"),
        ("test_size", cfg.test_size is not None and cfg.test_size < 1, "a positive number or null"),
        ("train_size", cfg.train_size is not None and cfg.train_size < 2, "at least 2 or null"),
        ("real_baseline", cfg.real_baseline is not None and cfg.real_baseline < 2, "at least 2 or null"),
        ("dedupe", cfg.dedupe not in DEDUPE_MODES, " or ".join(DEDUPE_MODES)),
    ]
    for name, bad, want in problems:
        if bad:
            raise SynthgapError(f"config field '{name}': {want} (got {getattr(cfg, name)})")


def _cap(s: ImageSet, n: int | None) -> ImageSet:
    if n is None or n >= len(s):
        return s
    return s.subset(stratified_sample(s.labels, n, np.random.default_rng(HOLDOUT_SEED)), s.name)


def load_transfer_data(real: str, synthetic: str, cfg: TransferConfig, root=None, *, progress: bool = True):
    """{domain: {split: ImageSet}} after the audit (cfg.dedupe) and the test cap, and the audit (None when off).

    The audit sees the whole splits; the test cap is drawn from what `dedupe: drop` leaves."""
    from synthgap.audit import AuditPart, apply_dedupe

    classes = parse_classes(cfg.classes)
    parts = [
        AuditPart(spec, split, domain, load_spec(spec, split, classes, cfg.image_size, root, domain))
        for domain, spec in (("real", real), ("synthetic", synthetic))
        for split in SPLITS
    ]
    sets, audit = apply_dedupe(parts, cfg.dedupe, progress=progress)
    data: dict[str, dict[str, ImageSet]] = {d: {} for d in DOMAINS}
    for part, s in zip(parts, sets):
        data[part.domain][part.split] = _cap(s, cfg.test_size) if part.split == "test" else s
    held = {d: len(data[d]["test"]) for d in DOMAINS}
    if cfg.test_size and min(held.values()) < cfg.test_size:
        log.warning(
            "test_size %d capped at what the test splits hold: %s",
            cfg.test_size,
            ", ".join(f"{n} {d}" for d, n in held.items()),
        )
    return data, audit


def _run_meta(cfg: TransferConfig, real: str, synthetic: str, ts, seed: int, result: dict) -> dict:
    """The classifier.json of one run: its test figures per domain and what it was trained on."""
    metrics = {f"test_{d}_{k}": m[k] for d, m in result["test"].items() for k in ("accuracy", "macro_f1") if k in m}
    trained_on = {
        "training_set": ts.name,
        "seed": seed,
        "real": real,
        "synthetic": synthetic,
        "n_real": ts.n_real,
        "n_synthetic": ts.n_synthetic,
        "train_sha256": result.get("train_sha256"),
    }
    return classifier_meta(
        dataclasses.replace(cfg.train, seed=seed),
        parse_classes(cfg.classes),
        cfg.image_size,
        metrics,
        trained_on,
        name=f"{ts.name}/seed{seed}",
    )


def run_transfer(
    real: str,
    synthetic: str,
    out_dir: str | Path,
    cfg: TransferConfig | None = None,
    *,
    root=None,
    progress: bool = True,
) -> list[dict]:
    """Run every (training set, seed) not yet finished in out_dir; write the output contract; return the records.

    Re-running the same call resumes: finished runs are read back, an interrupted one continues
    from its last epoch checkpoint.
    """
    from synthgap.report import write_report
    from synthgap.report.plots import plot_samples

    cfg = cfg or TransferConfig()
    check_transfer_config(cfg)
    out = Path(out_dir)
    folder = RunDir(out, "config.yaml", "a study", data_record="environment.json")
    remedy = "choose a new --out, or delete the folder"
    folder.claim(cfg, remedy=remedy)  # the config first: a refused run loads no data
    data, audit = load_transfer_data(real, synthetic, cfg, root, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))
    size, sets = plan_training_sets(cfg, len(data["real"]["train"]), len(data["synthetic"]["train"]))
    budget = cfg.train.epochs * size
    env = environment()
    env["config_hash"] = identity_hash(cfg)
    env["data"] = {
        f"{d}_{split}": {
            "spec": real if d == "real" else synthetic,
            **s.describe(),
            "skipped_files": [{"path": p, "reason": r} for p, r in s.skipped],
        }
        for d in DOMAINS
        for split, s in data[d].items()
    }
    env["budget_images_per_run"] = budget
    env["audit"] = audit_record(audit, cfg.dedupe)
    folder.claim(cfg, data=env["data"], remedy=remedy)
    if audit:
        audit.write(out / "audit")
    write_json(out / "environment.json", env)
    plot_samples({d: data[d]["train"] for d in DOMAINS}, out / "samples.png")

    records: list[dict] = []
    runs = [(ts, seed) for seed in cfg.seeds for ts in sets]
    for i, (ts, seed) in enumerate(runs, 1):
        desc = f"[{i}/{len(runs)}] {ts.name} seed {seed}"
        result = one_run(
            data,
            cfg,
            ts,
            seed,
            out / "runs" / ts.name / f"seed{seed}",
            budget,
            desc,
            specs=(real, synthetic),
            progress=progress,
        )
        records += summary_records(result)
    write_summary(out, records)
    write_report(out)
    return records


def one_run(
    data: dict,
    cfg: TransferConfig,
    ts: TrainingSet,
    seed: int,
    run_dir: Path,
    budget: int,
    desc: str,
    *,
    specs: tuple[str, str],
    progress: bool = True,
) -> dict:
    """One (training set, seed): draw its training images, train (resuming an interrupted run), test on
    both domains, save the classifier and metrics.json; a finished run is read back. specs: the real and
    synthetic data specs, for its classifier.json."""
    from synthgap.report import plot_confusion

    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        result = json.loads(metrics_file.read_text())
        log.info("%s: done before, read back", desc)
        if not (run_dir / CLASSIFIER_META).exists():  # a run made before classifier.json existed
            save_classifier(run_dir, None, _run_meta(cfg, *specs, ts, seed, result))
        return result
    rng = np.random.default_rng([seed, 7])
    parts = []
    if ts.n_real:
        r = data["real"]["train"]
        parts.append(r.subset(stratified_sample(r.labels, ts.n_real, rng)))
    if ts.n_synthetic:
        s = data["synthetic"]["train"]
        parts.append(s.subset(stratified_sample(s.labels, ts.n_synthetic, rng)))
    train_set = concat(parts, ts.name, ts.train_domain)
    train_cfg = dataclasses.replace(cfg.train, seed=seed)
    t0 = time.perf_counter()
    fitted = fit(
        train_set,
        train_cfg,
        out_dir=run_dir,
        resume=True,
        budget_images=cfg.train.epochs * len(train_set) if ts.epochs_of_own_size else budget,
        progress=progress,
        desc=desc,
    )
    tests = {d: evaluate(fitted.model, data[d]["test"], tta=cfg.train.tta, device=fitted.device) for d in DOMAINS}
    result = {
        "training_set": ts.name,
        "train_domain": ts.train_domain,
        "seed": seed,
        "synthetic_fraction": round(ts.synthetic_fraction, 4),
        "n_real": ts.n_real,
        "n_synthetic": ts.n_synthetic,
        "train_sha256": train_set.sha256(),
        "seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(fitted.seconds, 1),
        "images_per_second": round(fitted.images_per_second, 1),
        "best_epoch": fitted.best_epoch,
        "best_val_accuracy": fitted.best_val_accuracy,
        "history": fitted.history,
        "test": tests,
    }
    for d in DOMAINS:
        plot_confusion(tests[d], run_dir / f"confusion_{d}.png", f"train {ts.name} → test {d} (seed {seed})")
    save_classifier(run_dir, fitted.model, _run_meta(cfg, *specs, ts, seed, result))
    write_json(metrics_file, result)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    log.info(
        "%s: real %.4f, synthetic %.4f (%.0f s)",
        desc,
        tests["real"]["accuracy"],
        tests["synthetic"]["accuracy"],
        result["seconds"],
    )
    return result


def summary_records(result: dict) -> list[dict]:
    """A run's rows of summary.json: one per test domain."""
    return [
        {
            "training_set": result["training_set"],
            "train_domain": result["train_domain"],
            "test_domain": d,
            "synthetic_fraction": result["synthetic_fraction"],
            "seed": result["seed"],
            "accuracy": result["test"][d]["accuracy"],
            "macro_f1": result["test"][d]["macro_f1"],
            "n_train": result["n_real"] + result["n_synthetic"],
        }
        for d in DOMAINS
    ]


def write_summary(out: Path, records: list[dict]) -> None:
    """summary.json and summary.csv (summary.md and the plots come with the report)."""
    write_json(out / "summary.json", records)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]))
    w.writeheader()
    w.writerows(records)
    write_text(out / "summary.csv", buf.getvalue())
