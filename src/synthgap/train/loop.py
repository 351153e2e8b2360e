"""One training loop for every classifier in synthgap.

Data stays on the device as uint8 tensors; each batch is indexed, normalised and augmented
there. Every random draw (split, order, augmentation) comes from generators seeded by
(seed, epoch), so a run resumed from its per-epoch checkpoint ends exactly where an
uninterrupted one would.
"""
from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.config import TrainConfig, to_dict
from synthgap.data.sets import ImageSet, holdout_split
from synthgap.io import save_torch
from synthgap.models import build_model
from synthgap.train.evaluate import image_input, loss_fn, predict_proba

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SynthgapError("device 'cuda' requested but no CUDA GPU is available (use device=auto or cpu)")
    return torch.device(name)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    device: str = "cpu"


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device if device.type == "cuda" else "cpu")
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def _amp(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype == torch.float16
    return nullcontext(), False


def check_config(cfg: TrainConfig, where: str = "train") -> None:
    """Range checks of a training config: a clear error before any data is loaded or step taken."""
    a = cfg.augment

    def pair(r, lo, hi):
        return len(r) == 2 and lo <= r[0] <= r[1] <= hi

    checks = [("augment.jpeg_quality", pair(a.jpeg_quality, 1, 100), "[low, high] within 1..100"),
              ("augment.downscale_range", pair(a.downscale_range, 0.125, 1), "[low, high] within 0.125..1"),
              ("augment.blur_sigma", pair(a.blur_sigma, 0.01, 3), "[low, high] within 0.01..3"),
              *((f"augment.{k}", 0 <= getattr(a, k) <= 1, "a probability in [0, 1]") for k in ("jpeg", "downscale", "blur")),("batch_size", cfg.batch_size >= 1, "at least 1"), ("epochs", cfg.epochs >= 1, "at least 1"),
              ("lr", cfg.lr > 0, "positive"), ("warmup", 0 <= cfg.warmup < 1, "in [0, 1)"),
              ("val_fraction", 0 <= cfg.val_fraction < 1, "in [0, 1)"), ("patience", cfg.patience >= 0, "0 or more"),
              ("label_smoothing", 0 <= cfg.label_smoothing < 1, "in [0, 1)")]
    for name, ok, want in checks:
        if not ok:
            value = getattr(a, name.split(".")[1]) if name.startswith("augment.") else getattr(cfg, name)
            raise SynthgapError(f"config field '{where}.{name}': expected {want}, got {value}")


def fit(train: ImageSet, cfg: TrainConfig, *, out_dir: str | Path | None = None, resume: bool = False,
        val: ImageSet | None = None, budget_images: int | None = None, progress: bool = True,
        desc: str = "train", model: torch.nn.Module | None = None, prepare=None, on_epoch=None,
        batches=None, val_proba=None) -> FitResult:
    """Train `cfg.model` (or `model`) on `train`; pick the epoch with the best validation accuracy.

    val: a validation set; by default `cfg.val_fraction` of `train` is held out (stratified).
    budget_images: total training images to process (sets the step count, so arms of different
    sizes can share one budget); default: epochs x training-set size.
    out_dir: where the per-epoch checkpoint goes (atomic); with resume=True a run continues from it.
    model: a ready module to train instead of building `cfg.model`; only parameters with
    requires_grad are optimised. A model with one output is a binary classifier (sigmoid loss).
    prepare(x, g): turns a batch of `train.images` into model input; g is the augmentation
    generator, None at evaluation. Default: uint8 images, normalised and augmented per cfg.augment.
    on_epoch(record): called after each epoch with its metrics (e.g. to prune an Optuna trial).
    batches: where the uint8 batches come from when `train.images` are not the model's input (the
    detector's crops, synthgap.detect.crops.RandomCrops): batches.epoch(order, batch_size, steps, g)
    yields the batches of order[i * batch_size : ...]; needs `val`. val_proba(model, prepare): the
    validation set's N x C probabilities, when they are not predict_proba of `val.images`.
    """
    check_config(cfg)
    set_threads(cfg.threads)
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    if batches is not None and val is None:
        raise SynthgapError(f"{desc}: a batch source needs its validation set given")
    if val is None and cfg.val_fraction > 0:
        keep, held = holdout_split(train.labels, cfg.val_fraction, seed=cfg.seed)
        train, val = train.subset(keep), train.subset(held)
    if len(train) == 0:
        raise SynthgapError(f"{train.name or 'training set'}: no training images")

    x_train = train.images.to(device) if batches is None else None
    y_train = train.labels.to(device)
    n = len(train)
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: BN likes full batches
    total_steps = (
        max(1, math.ceil(budget_images / batch_size)) if budget_images else steps_per_epoch * cfg.epochs
    )
    epochs = math.ceil(total_steps / steps_per_epoch)

    if model is None:
        model = build_model(cfg.model, len(train.classes), widths=cfg.widths)
    model = model.to(device).to(memory_format=torch.channels_last)
    prepare = prepare or image_input(cfg.augment)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise SynthgapError(f"{desc}: the model has no trainable parameter")
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        raise SynthgapError(f"config field 'train.optimizer': unknown '{cfg.optimizer}' (sgd or adamw)")
    if cfg.schedule == "onecycle" and total_steps < 4:  # too few steps to ramp up and down: constant
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    elif cfg.schedule == "onecycle":
        # Each phase needs at least two steps (OneCycleLR divides by their lengths).
        pct = min(max(cfg.warmup, 2 / total_steps), 1 - 2 / total_steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct, anneal_strategy="linear",
            div_factor=10, final_div_factor=100, cycle_momentum=False,
        )
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup * total_steps))
            * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    else:
        raise SynthgapError(f"config field 'train.schedule': unknown '{cfg.schedule}' (onecycle or cosine)")
    autocast, use_scaler = _amp(device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    result = FitResult(model=model, device=str(device))
    best_state, start_epoch, step, trained_seconds, stopped = None, 0, 0, 0.0, False
    data_sha = train.sha256()
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir else None
    if resume and ckpt_path and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck["config"] != to_dict(cfg) or ck["total_steps"] != total_steps:
            raise SynthgapError(f"{ckpt_path}: checkpoint was made with a different config; remove it to start over")
        if ck["train_sha256"] != data_sha:
            raise SynthgapError(f"{ckpt_path}: checkpoint was made on other training data; remove it to start over")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        best_state, start_epoch, step = ck["best_state"], ck["epoch"] + 1, ck["step"]
        result.history, result.best_epoch, result.best_val_accuracy = ck["history"], ck["best_epoch"], ck["best_val_accuracy"]
        trained_seconds, stopped = ck["seconds"], ck["stopped"]

    from tqdm.auto import tqdm

    from synthgap.io import progress_bar

    for epoch in range(start_epoch, epochs):
        if step >= total_steps or stopped:
            break
        g = _epoch_generator(cfg.seed, epoch, device)
        order = torch.randperm(n, generator=g, device=g.device).to(device)
        n_steps = min(steps_per_epoch, total_steps - step)
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        bar = progress_bar(range(n_steps), desc=f"{desc} epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                   enabled=progress, mininterval=1.0)
        source = batches.epoch(order, batch_size, n_steps, g) if batches is not None else None
        for i in bar:
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = prepare(x_train[idx] if source is None else next(source).to(device), g)
            with autocast:
                loss = loss_fn(model(x), y_train[idx], cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            step += 1
            loss_sum += loss.detach()
            if progress and i % 10 == 9:
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{(i + 1) * batch_size / (time.perf_counter() - t0):.0f}")
        bar.close()
        source = None  # a batch source's worker processes end here, before validation starts its own
        seconds = time.perf_counter() - t0
        trained_seconds += seconds
        record = {"epoch": epoch + 1, "step": step, "train_loss": round(loss_sum.item() / n_steps, 4),
                  "lr": round(lr, 6), "seconds": round(seconds, 2),
                  "images_per_second": round(n_steps * batch_size / seconds, 1)}
        if val is not None and len(val):
            proba = (val_proba(model, prepare) if val_proba else
                     predict_proba(model, val.images, tta=cfg.tta, device=device, prepare=prepare))
            record["val_accuracy"] = round(float((proba.argmax(1) == val.labels).float().mean()), 4)
            if result.best_val_accuracy is None or record["val_accuracy"] > result.best_val_accuracy:
                result.best_val_accuracy, result.best_epoch = record["val_accuracy"], epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            result.best_epoch = epoch + 1
        result.history.append(record)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: loss {record['train_loss']:.3f}"
                       + (f", val acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else "")
                       + f", {record['images_per_second']:.0f} img/s")
        stopped = bool(cfg.patience and epoch + 1 - result.best_epoch >= cfg.patience)
        if on_epoch:
            on_epoch(record)
        if ckpt_path:
            save_torch(ckpt_path, {
                "config": to_dict(cfg), "total_steps": total_steps, "epoch": epoch, "step": step,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "best_state": best_state, "history": result.history, "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy, "seconds": trained_seconds,
                "train_sha256": data_sha, "stopped": stopped,
            })
        if stopped:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = trained_seconds
    total_images = sum(r["images_per_second"] * r["seconds"] for r in result.history)
    result.images_per_second = total_images / max(trained_seconds, 1e-9)
    return result
