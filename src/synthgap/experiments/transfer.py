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
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.audit import DEDUPE_MODES, audit_record
from synthgap.config import dump_yaml
from synthgap.data.sets import HOLDOUT_SEED, SPLITS, ImageSet, concat, load_spec, parse_classes
from synthgap.device import select_device
from synthgap.experiments.config import GAP_CLOSING, TransferConfig
from synthgap.io import environment, write_json, write_text
from synthgap.runs import RunDir, identity_hash
from synthgap.train.classifier import META as CLASSIFIER_META
from synthgap.train.classifier import classifier_meta, load_classifier, save_classifier
from synthgap.train.config import TrainConfig
from synthgap.train.evaluate import adapt_batchnorm, evaluate, predict_proba
from synthgap.train.loop import CHECKPOINT, FitResult, check_config, fit, split_task

log = logging.getLogger("synthgap")
DOMAINS = ("real", "synthetic")


@dataclass
class TrainingSet:
    """How one run's training set is drawn: n_real real images plus n_synthetic synthetic ones."""

    name: str
    train_domain: str
    n_real: int
    n_synthetic: int
    epochs_of_own_size: bool = False  # budget: epochs x its own size (at least min_steps), not the shared budget
    real_per_class: int | None = None  # the scarcity curve's k (0: the synthetic set alone); None: not on the curve
    with_synthetic: bool = False  # a curve run with the synthetic set added
    arm: str | None = None  # a gap-closing arm (GAP_CLOSING)
    start_from: str | None = None  # finetune, adabn: the training set whose model (same seed) it starts from
    filter_by: str | None = None  # filter: the training set whose model (same seed) scores the synthetic images

    @property
    def synthetic_fraction(self) -> float:
        return self.n_synthetic / max(1, self.n_real + self.n_synthetic)

    @property
    def wave(self) -> int:
        """0: trained from scratch; 1: needs a wave-0 run's saved model."""
        return int(bool(self.start_from or self.filter_by))


def run_budget(cfg: TransferConfig, n_images: int) -> int:
    """The budget rule of a run fitted to its own data: train.epochs over its images, at least min_steps
    steps of train.batch_size (fewer images than a batch: batches of all of them)."""
    return max(cfg.train.epochs * n_images, cfg.min_steps * min(cfg.train.batch_size, n_images))


MIN_VALIDATION = 20  # fewer validation images cannot tell a run that learned from one at chance


def chance_level(n_classes: int, n_val: int) -> float:
    """The validation accuracy a run must beat to count as having learned: chance plus two binomial standard
    errors at the validation set's size."""
    p = 1 / n_classes
    return p + 2 * math.sqrt(p * (1 - p) / max(1, n_val))


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


def _per_class(k: int | str) -> int | None:
    return None if str(k) == "all" else int(k)


def plan_curve_sets(cfg: TransferConfig, n_real: int, n_synthetic: int) -> list[TrainingSet]:
    """The scarcity curve's training sets (real_per_class) and the gap-closing arms (gap_closing at gap_sizes),
    each with a budget fitted to its own data (run_budget)."""
    if not cfg.real_per_class and not cfg.gap_closing:
        return []
    n_classes = len(cfg.classes)
    n_syn = n_synthetic if cfg.curve_synthetic_per_class is None else cfg.curve_synthetic_per_class * n_classes
    if n_syn > n_synthetic:
        log.warning(
            "config field 'curve_synthetic_per_class': %d x %d classes is more than the %d synthetic training "
            "images; using them all",
            cfg.curve_synthetic_per_class,
            n_classes,
            n_synthetic,
        )
        n_syn = n_synthetic

    def n_real_of(k: int | None, field_name: str) -> tuple[int, int]:
        if k is None or k * n_classes >= n_real:
            if k is not None:
                log.warning(
                    "config field '%s': %d real images per class is more than the real training split holds "
                    "(%d in all); using them all",
                    field_name,
                    k,
                    n_real,
                )
            return n_real, round(n_real / n_classes)
        return k * n_classes, k

    def own(name, domain, n_r, n_s, **kw) -> TrainingSet:
        return TrainingSet(name, domain, n_r, n_s, epochs_of_own_size=True, **kw)

    syn_only = "curve-synthetic"
    sets = [own(syn_only, "synthetic", 0, n_syn, real_per_class=0, with_synthetic=True)]
    for k in cfg.real_per_class:
        n_r, per = n_real_of(_per_class(k), "real_per_class")
        tag = "all" if _per_class(k) is None else per
        sets.append(own(f"curve-real{tag}", "real", n_r, 0, real_per_class=per))
        sets.append(own(f"curve-real{tag}+synthetic", "mixed", n_r, n_syn, real_per_class=per, with_synthetic=True))
    arms = cfg.gap_closing
    if "augment" in arms:
        sets.append(own("augment", "synthetic", 0, n_syn, real_per_class=0, with_synthetic=True, arm="augment"))
    if "selftrain" in arms:  # no real label: at k = 0, its real images the pseudo-labelled ones it keeps
        teacher = "augment" if "augment" in arms else syn_only
        n_pseudo = max(n_classes, round(cfg.selftrain_keep * n_real))
        sets.append(
            own(
                "selftrain",
                "mixed",
                n_pseudo,
                n_syn,
                real_per_class=0,
                with_synthetic=True,
                arm="selftrain",
                start_from=teacher,
            )
        )
    n_keep = max(n_classes, round(cfg.filter_keep * n_syn))
    for k in cfg.gap_sizes:
        n_r, per = n_real_of(k, "gap_sizes")
        real_k = f"curve-real{per}"
        # arm at k real per class: (train_domain, synthetic images, the wave-0 run it starts from or filters by)
        at_k = {
            "finetune": ("synthetic->real", 0, {"start_from": syn_only}),
            "adabn": ("synthetic", 0, {"start_from": syn_only}),
            "augment+adabn": ("synthetic", 0, {"start_from": "augment"}),
            "filter": ("mixed", n_keep, {"filter_by": real_k}),
        }
        chosen = [a for a in at_k if set(a.split("+")) <= set(arms)]  # augment+adabn: both asked for
        if "filter" in chosen and real_k not in {s.name for s in sets}:
            sets.append(own(real_k, "real", n_r, 0, real_per_class=per))
        for arm in chosen:
            domain, n_s, source = at_k[arm]
            sets.append(
                own(f"{arm}-{per}", domain, n_r, n_s, real_per_class=per, arm=arm, with_synthetic=True, **source)
            )
    return sets


def check_transfer_config(cfg: TransferConfig) -> None:
    """Checks that need no data: a clear error before anything is loaded or trained (a warning for a
    `train` field the study overrides)."""
    check_config(cfg.train)
    problems = [
        ("seeds", not cfg.seeds, "give at least one seed"),
        ("fractions", not all(0 <= f <= 1 for f in cfg.fractions), "every fraction between 0 and 1"),
        ("extra_synthetic", not all(k > 0 for k in cfg.extra_synthetic), "positive multiples"),
        (
            "fractions",
            not (cfg.fractions or cfg.extra_synthetic or cfg.real_per_class or cfg.gap_closing),
            "at least one training set (fractions, extra_synthetic, real_per_class or gap_closing)",
        ),
        ("test_size", cfg.test_size is not None and cfg.test_size < 1, "a positive number or null"),
        ("train_size", cfg.train_size is not None and cfg.train_size < 2, "at least 2 or null"),
        ("real_baseline", cfg.real_baseline is not None and cfg.real_baseline < 2, "at least 2 or null"),
        ("dedupe", cfg.dedupe not in DEDUPE_MODES, " or ".join(DEDUPE_MODES)),
        ("min_steps", cfg.min_steps < 0, "steps >= 0"),
        (
            "real_per_class",
            not all(str(k) == "all" or (isinstance(k, int) and k >= 1) for k in cfg.real_per_class),
            "real images per class: whole numbers >= 1 or 'all', e.g. [10, 50, 200, 1000, all]",
        ),
        (
            "curve_synthetic_per_class",
            cfg.curve_synthetic_per_class is not None and cfg.curve_synthetic_per_class < 1,
            "a positive number or null (the whole synthetic training split)",
        ),
        ("gap_closing", not set(cfg.gap_closing) <= set(GAP_CLOSING), f"a list of {', '.join(GAP_CLOSING)}"),
        ("gap_sizes", not all(isinstance(k, int) and k >= 1 for k in cfg.gap_sizes), "whole numbers >= 1"),
        (
            "gap_sizes",
            bool(set(cfg.gap_closing) - {"augment", "selftrain"}) and not cfg.gap_sizes,
            "real images per class for the finetune, adabn and filter arms, e.g. [50, 200]",
        ),
        ("filter_keep", not 0 < cfg.filter_keep <= 1, "a share between 0 and 1"),
        (
            "curve_real_share",
            cfg.curve_real_share is not None and not 0 < cfg.curve_real_share < 1,
            "a share between 0 and 1 (exclusive), or null",
        ),
        ("finetune_lr_scale", not cfg.finetune_lr_scale > 0, "a positive factor"),
        ("selftrain_rounds", not (isinstance(cfg.selftrain_rounds, int) and cfg.selftrain_rounds >= 1), "at least 1"),
        ("selftrain_keep", not 0 < cfg.selftrain_keep <= 1, "a share between 0 and 1"),
    ]
    for name, bad, want in problems:
        if bad:
            raise SynthgapError(f"config field '{name}': {want} (got {getattr(cfg, name)})")
    if cfg.train.seed != TrainConfig().seed:
        log.warning("config field 'train.seed' (%s) is ignored: each run takes its seed from 'seeds'", cfg.train.seed)


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
    ray: str | None = None,
    ray_cpus: float = 1,
    ray_gpus: float = 0,
) -> list[dict]:
    """Run every (training set, seed) not yet finished in out_dir; write the output contract; return the records.

    Re-running the same call resumes: finished runs are read back, an interrupted one continues
    from its last epoch checkpoint (whether it ran on Ray or not).

    ray: run the runs as Ray tasks of `ray_cpus` CPUs and `ray_gpus` GPUs each on that cluster ('local',
    'auto' or an address: synthgap.cluster.connect); out_dir must then lie on storage every node sees.
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
    n_real, n_synthetic = len(data["real"]["train"]), len(data["synthetic"]["train"])
    size, sets = plan_training_sets(cfg, n_real, n_synthetic) if cfg.fractions or cfg.extra_synthetic else (0, [])
    sets += plan_curve_sets(cfg, n_real, n_synthetic)
    budget = run_budget(cfg, size)  # the fraction arms' shared budget
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

    # Wave 1 (fine-tuning, AdaBN, filtering) starts from wave 0's saved models.
    runs = [(ts, seed) for wave in (0, 1) for seed in cfg.seeds for ts in sets if ts.wave == wave]
    from synthgap.cluster import run_tasks

    def run_desc(item: tuple) -> str:
        i, (ts, seed) = item
        return f"[{i}/{len(runs)}] {ts.name} seed {seed}"

    def train(item: tuple, data: dict) -> dict:  # one run: here, or a Ray task given the shared data
        _, (ts, seed) = item
        run_dir = out / "runs" / ts.name / f"seed{seed}"
        return one_run(
            data,
            cfg,
            ts,
            seed,
            run_dir,
            budget,
            run_desc(item),
            specs=(real, synthetic),
            progress=progress and ray is None,
        )

    position = {(ts.name, seed): k for k, (ts, seed) in enumerate(runs)}
    results = run_tasks(
        train,
        list(enumerate(runs, 1)),
        ray=ray,
        shared={"data": data},
        cpus=ray_cpus,
        gpus=ray_gpus,
        desc="transfer",
        describe=run_desc,
        # a wave-1 run starts once the run whose model it reads is saved (on Ray: that run alone, not the wave)
        needs=[[position[name, seed] for name in (ts.start_from, ts.filter_by) if name] for ts, seed in runs],
    )
    records = [row for result in results for row in summary_records(result)]
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
    train_set = None if ts.arm == "selftrain" else draw_training_set(data, ts, seed, run_dir)
    train_cfg = dataclasses.replace(cfg.train, seed=seed)
    if ts.arm == "augment":
        train_cfg = dataclasses.replace(train_cfg, augment=cfg.strong_augment)
    if ts.arm == "finetune":
        train_cfg = dataclasses.replace(train_cfg, lr=cfg.train.lr * cfg.finetune_lr_scale)
    # a curve run of real and synthetic images: a share of each batch is real (curve_real_share)
    mixed = ts.real_per_class is not None and ts.n_real and ts.n_synthetic
    real_share = cfg.curve_real_share if mixed else None
    start, start_learned = None, None
    if ts.start_from:
        start_dir = run_dir.parent.parent / ts.start_from / f"seed{seed}"
        start = load_classifier(start_dir).model
    t0 = time.perf_counter()
    n_budget = run_budget(cfg, len(train_set)) if ts.epochs_of_own_size and train_set is not None else budget
    if ts.arm == "selftrain":  # its rounds draw their own training sets
        fitted, train_set, n_budget = self_train(data, cfg, ts, seed, start, run_dir, desc, progress=progress)
    elif ts.arm is not None and ts.arm.endswith("adabn"):  # no training: the start model, its BatchNorm re-estimated
        device = select_device(cfg.train.device)
        model = adapt_batchnorm(start.to(device), train_set.images, device=device)
        start_metrics = json.loads((start_dir / "metrics.json").read_text())
        fitted = FitResult(model=model, device=str(device), best_val_accuracy=start_metrics["best_val_accuracy"])
        n_budget = 0
        start_learned = start_metrics.get("learned")
    else:
        train = train_set
        if real_share:
            is_real = torch.arange(len(train_set)) < ts.n_real  # the real part comes first
            train = split_task(train_set, train_cfg, select_device(train_cfg.device), is_real, real_share)
        fitted = fit(
            train,
            train_cfg,
            out_dir=run_dir,
            resume=True,
            budget_images=n_budget,
            progress=progress,
            desc=desc,
            model=start,
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
        "budget_steps": math.ceil(n_budget / min(train_cfg.batch_size, len(train_set))),
        "learned": start_learned  # AdaBN trains nothing: it learned what its start model learned
        if n_budget == 0
        else learned(fitted.best_val_accuracy, len(train_set.classes), len(train_set), cfg.train.val_fraction),
        "history": fitted.history,
        "test": tests,
    }
    if ts.real_per_class is not None:
        result.update(real_per_class=ts.real_per_class, with_synthetic=ts.with_synthetic, arm=ts.arm)
    if real_share:
        result["real_share"] = real_share
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


def draw_training_set(data: dict, ts: TrainingSet, seed: int, run_dir: Path) -> ImageSet:
    """A run's training images: ts.n_real real and ts.n_synthetic synthetic ones, drawn per class with the run's
    seed (filter: the synthetic images the filter_by run's classifier, same seed, is most confident in)."""
    rng = np.random.default_rng([seed, 7])
    parts = []
    if ts.n_real:
        r = data["real"]["train"]
        parts.append(r.subset(stratified_sample(r.labels, ts.n_real, rng)))
    if ts.n_synthetic:
        s = data["synthetic"]["train"]
        if ts.filter_by:  # the synthetic images the real-trained classifier is most confident in, per class
            scorer = load_classifier(run_dir.parent.parent / ts.filter_by / f"seed{seed}")
            confidence = scorer.predict(s.images).gather(1, s.labels[:, None])[:, 0]
            parts.append(s.subset(most_confident(s.labels, confidence, ts.n_synthetic)))
        else:
            parts.append(s.subset(stratified_sample(s.labels, ts.n_synthetic, rng)))
    return concat(parts, ts.name, ts.train_domain)


def self_train(
    data: dict, cfg: TransferConfig, ts: TrainingSet, seed: int, start, run_dir: Path, desc: str, *, progress: bool
) -> tuple[FitResult, ImageSet, int]:
    """The selftrain arm (self-training, as Noisy Student: Xie et al., CVPR 2020), no real label used: a teacher,
    its BatchNorm re-estimated on the real training images, labels them; the student is trained from scratch,
    with strong augmentation, on the synthetic images and the ts.n_real of them it labels most confidently
    (curve_real_share of each batch), and is the next round's teacher. Returns the last student, its BatchNorm
    re-estimated on the same images (transductive), its training set and the images of all rounds' budgets
    (each run_budget of its training set). Each round resumes from
    its checkpoint (round r < last in run_dir/round{r})."""
    import shutil

    device = select_device(cfg.train.device)
    real = data["real"]["train"]
    synthetic = draw_training_set(data, dataclasses.replace(ts, n_real=0), seed, run_dir)  # as any run draws it
    train_cfg = dataclasses.replace(cfg.train, seed=seed, augment=cfg.strong_augment)
    teacher = adapt_batchnorm(start.to(device), real.images, device=device)
    rounds = cfg.selftrain_rounds
    for r in range(1, rounds + 1):
        with torch.no_grad():
            confidence, labels = predict_proba(teacher, real.images, device=device).max(1)
        keep = torch.as_tensor(most_confident(labels, confidence, ts.n_real))
        pseudo = ImageSet(real.images[keep], labels[keep], real.classes, "pseudo-labelled real", "real")
        train_set = concat([pseudo, synthetic], ts.name, ts.train_domain)
        task = train_set
        if cfg.curve_real_share:
            is_real = torch.arange(len(train_set)) < len(pseudo)
            task = split_task(train_set, train_cfg, device, is_real, cfg.curve_real_share)
        budget = run_budget(cfg, len(train_set))
        fitted = fit(
            task,
            train_cfg,
            out_dir=run_dir if r == rounds else run_dir / f"round{r}",
            resume=True,
            budget_images=budget,
            progress=progress,
            desc=f"{desc} round {r}/{rounds}",
        )
        teacher = adapt_batchnorm(fitted.model, real.images, device=device)
    for r in range(1, rounds):
        shutil.rmtree(run_dir / f"round{r}", ignore_errors=True)
    fitted.model = teacher
    return fitted, train_set, rounds * budget  # every round's images: the arm's whole budget


def learned(best_val_accuracy: float | None, n_classes: int, n_train: int, val_fraction: float) -> bool | None:
    """False when the best validation accuracy never left chance (chance_level at the held-out share of
    n_train); None (unknown) without a validation set or with fewer than MIN_VALIDATION images in it."""
    n_val = round(n_train * val_fraction)
    if best_val_accuracy is None or n_val < MIN_VALIDATION:
        return None
    return best_val_accuracy > chance_level(n_classes, n_val)


def most_confident(labels: torch.Tensor, confidence: torch.Tensor, n: int) -> np.ndarray:
    """n indices, spread over classes in proportion to their counts (as stratified_sample), each class's
    share taken from its most confident images (confidence: the probability of the image's own label)."""
    quota = np.bincount(
        labels[stratified_sample(labels, n, np.random.default_rng(0))].numpy(), minlength=int(labels.max()) + 1
    )
    keep = [
        idx[torch.argsort(confidence[idx], descending=True, stable=True)[:q]].numpy()
        for c, q in enumerate(quota)
        for idx in [torch.nonzero(labels == c).flatten()]
    ]
    return np.sort(np.concatenate(keep))


CURVE_KEYS = ("real_per_class", "with_synthetic", "arm")


def summary_records(result: dict) -> list[dict]:
    """A run's rows of summary.json: one per test domain (curve runs also say where on the curve they are)."""
    curve = {k: result[k] for k in CURVE_KEYS if k in result}
    learned_ = {"learned": result["learned"], "budget_steps": result["budget_steps"]} if "learned" in result else {}
    if "real_share" in result:
        curve["real_share"] = result["real_share"]
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
            **learned_,
            **curve,
        }
        for d in DOMAINS
    ]


def write_summary(out: Path, records: list[dict]) -> None:
    """summary.json and summary.csv (summary.md and the plots come with the report)."""
    write_json(out / "summary.json", records)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in records for k in r)), restval="")
    w.writeheader()
    w.writerows(records)
    write_text(out / "summary.csv", buf.getvalue())
