"""Hyperparameter search for the detector: an Optuna study (TPE sampler, median pruner) in SQLite,
so an interrupted study resumes where it stopped. `sampler='random'` is Keras Tuner's RandomSearch.

Trials are scored on the validation split only; the test split is for the final model.
"""

from __future__ import annotations

import csv
import dataclasses
import warnings
from pathlib import Path

from synthgap import SynthgapError
from synthgap.config import dump_yaml
from synthgap.detect.config import DetectorConfig, from_scratch
from synthgap.detect.data import DetectorData
from synthgap.detect.train import (
    check_run_config,
    data_environment,
    input_chain,
    new_detector,
    stage1_features,
    train_detector,
)
from synthgap.device import select_device
from synthgap.io import atomic_path, write_json, write_text
from synthgap.models.registry import BACKBONES
from synthgap.runs import RunDir

STUDY = "study.db"


def suggest(trial, cfg: DetectorConfig, max_finetune_blocks: int) -> DetectorConfig:
    """The search space: head width, dropout, learning rates, weight decay, unfreeze depth, augmentation strength."""
    width = trial.suggest_categorical("head_width", [64, 128, 256, 512])
    dropout = trial.suggest_float("dropout", 0.0, 0.6)

    def augmented(stage):  # augmentation only acts where images are trained on, so only there is it searched
        strength = trial.suggest_float("augment_strength", 0.0, 1.0)
        aug = dataclasses.replace(
            stage.augment,
            rotate=10 * strength,
            zoom=0.1 * strength,
            brightness=0.2 * strength,
            contrast=0.2 * strength,
            jpeg=0.3 * strength,
            downscale=0.2 * strength,
            blur=0.2 * strength,
        )
        return dataclasses.replace(stage, augment=aug)

    if from_scratch(cfg):
        scratch = dataclasses.replace(
            augmented(cfg.scratch),
            lr=trial.suggest_float("lr", 0.02, 0.5, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-5, 5e-3, log=True),
        )
        return dataclasses.replace(cfg, head_width=width, dropout=dropout, scratch=scratch)
    head = dataclasses.replace(
        cfg.head,
        lr=trial.suggest_float("head_lr", 3e-4, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    )
    blocks = trial.suggest_int("finetune_blocks", 0, max_finetune_blocks) if max_finetune_blocks > 0 else 0
    finetune = cfg.finetune
    if blocks:
        finetune = dataclasses.replace(
            augmented(cfg.finetune),
            lr=trial.suggest_float("finetune_lr", 3e-5, 1e-3, log=True),
            weight_decay=head.weight_decay,
        )
    return dataclasses.replace(
        cfg, head_width=width, dropout=dropout, head=head, finetune_blocks=blocks, finetune=finetune
    )


def tune_detector(
    data: DetectorData,
    cfg: DetectorConfig,
    out: str | Path,
    *,
    trials: int = 20,
    timeout: float | None = None,
    sampler: str = "tpe",
    max_finetune_blocks: int = 2,
    progress: bool = True,
) -> dict:
    """Run (or resume) the study in `out` until it holds `trials` finished trials; write best.yaml,
    trials.csv, tune_history.png and tune.json. Returns the best trial's value and params."""
    import optuna
    from optuna.trial import TrialState

    check_run_config(cfg)
    if sampler not in ("tpe", "random"):
        raise SynthgapError(f"--sampler: expected 'tpe' or 'random', got '{sampler}'")
    if trials < 1:
        raise SynthgapError(f"--trials: expected at least 1, got {trials}")
    out = Path(out)
    # The search space is part of the study's identity: trials of two spaces do not mix.
    folder = RunDir(out, "study.json", "an Optuna study")
    space = {"sampler": sampler, "max_finetune_blocks": max_finetune_blocks}
    splits = {"train": data.train.describe(), "val": data.val.describe()}
    folder.claim(
        cfg, data=splits, extra_identity=space, remedy="use a new --out to study another config, data or search space"
    )
    out.mkdir(parents=True, exist_ok=True)
    # Heartbeats let a resumed study mark the trial a killed process left running as failed.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what makes resume after kill -9 work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{(out / STUDY).resolve()}", heartbeat_interval=30, grace_period=90
        )
    samplers = {
        "tpe": optuna.samplers.TPESampler(seed=cfg.seed),
        "random": optuna.samplers.RandomSampler(seed=cfg.seed),
    }
    study = optuna.create_study(
        study_name="detector",
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=samplers[sampler],
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    # A resumed study must not replay the first run's random draws: seed by the trials it holds.
    study.sampler = type(samplers[sampler])(seed=cfg.seed + len(study.trials))
    folder.write(cfg, data=splits, extra_identity=space)
    write_text(out / "config.yaml", dump_yaml(cfg))
    env = data_environment(data, cfg, out)

    features = None
    if not from_scratch(cfg) and cfg.cache_features:  # the frozen backbone's features are the same in every trial
        device = select_device(cfg.head.device)
        chain, _ = input_chain(cfg, data.train)
        model = new_detector(cfg, chain).to(device)
        features = stage1_features(model, data, chain, device, workers=cfg.workers, progress=progress, seed=cfg.seed)

    def objective(trial) -> float:
        trial_cfg = suggest(trial, cfg, max_finetune_blocks if BACKBONES[cfg.backbone].pretrainable else 0)

        def on_epoch(record):
            trial.report(record.get("val_accuracy", 0.0), record["stage_epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        _, history = train_detector(data, trial_cfg, None, progress=False, on_epoch=on_epoch, features=features)
        # The score of the model the config yields: its last stage's best epoch (a fine-tune that
        # does worse than the head alone is not credited with the head's accuracy).
        return list(history.values())[-1]["best_val_accuracy"] or 0.0

    done = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(0, trials - done)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout, show_progress_bar=progress, gc_after_trial=True)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if not complete:
        _write_trials(study, out)
        raise SynthgapError(f"{out}: no trial completed (all pruned or failed); see {out / 'trials.csv'}")
    best = study.best_trial
    best_cfg = suggest(
        optuna.trial.FixedTrial(best.params), cfg, max_finetune_blocks if BACKBONES[cfg.backbone].pretrainable else 0
    )
    write_text(out / "best.yaml", dump_yaml(best_cfg))
    _write_trials(study, out)
    summary = {
        "best_value": best.value,
        "best_params": best.params,
        "best_trial": best.number,
        "trials": {s.name: len(study.get_trials(states=(s,))) for s in TrialState},
        "sampler": sampler,
        "metric": "validation accuracy (best epoch)",
        "data_audit": env["audit"],
    }
    write_json(out / "tune.json", summary)
    return summary


def _write_trials(study, out: Path) -> None:
    from synthgap.report.plots import plot_tune_history

    trials = study.get_trials()
    names = sorted({k for t in trials for k in t.params})
    with atomic_path(out / "trials.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", "seconds", *names])
        for t in trials:
            secs = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else ""
            )
            w.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else round(t.value, 5),
                    secs and round(secs, 1),
                    *[t.params.get(n, "") for n in names],
                ]
            )
    last = {
        t.number: t.value
        if t.value is not None
        else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        for t in trials
    }
    plot_tune_history([(t.number, last[t.number], t.state.name) for t in trials], out / "tune_history.png")
