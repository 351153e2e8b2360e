"""One training loop for every classifier in synthgap.

What is trained is a TrainTask: where an epoch's batches come from, the loss of one, the validation
score and what follows an epoch. ClassifierTask, the default, keeps the data on the device as uint8
tensors; each batch is indexed, normalised and augmented there. The detector's stages are tasks of
their own (synthgap.detect.train). Every random draw (split, order, augmentation) comes from
generators seeded by (seed, epoch), so a run resumed from its per-epoch checkpoint ends exactly where
an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from synthgap import SynthgapError
from synthgap.config import to_dict
from synthgap.data.sets import ImageSet, holdout_split
from synthgap.device import mixed_precision, seed_everything, select_device, set_threads
from synthgap.io import progress_bar, save_torch
from synthgap.models import build_model
from synthgap.runs import check_resume, identity, recorded_identity
from synthgap.train.config import TrainConfig
from synthgap.train.evaluate import image_input, loss_fn, predict_proba

CHECKPOINT = "checkpoint.pt"

Batch = tuple[torch.Tensor, torch.Tensor]  # (model input, labels), on the device


class TrainTask(Protocol):
    """What `fit` trains: the classifier's (ClassifierTask) by default; the detector's stages are others."""

    train: ImageSet  # the training samples: each epoch's order is drawn over them; their hash binds a checkpoint

    def batches(self, order: torch.Tensor, batch_size: int, steps: int, g: torch.Generator) -> Iterator[Batch]:
        """The epoch's `steps` batches, batch i of the samples order[i * batch_size : (i + 1) * batch_size];
        every augmentation drawn from g."""
        ...

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The loss of one batch (run under the loop's autocast)."""
        ...

    def evaluate(self, model: torch.nn.Module) -> float | None:
        """The validation accuracy (4 decimals, as the history keeps it); None without a validation set."""
        ...

    def on_epoch_end(self, record: dict) -> None:
        """Called with each epoch's history record, before its checkpoint is written."""
        ...


def accuracy(proba: torch.Tensor, labels: torch.Tensor) -> float:
    return round(float((proba.argmax(1) == labels).float().mean()), 4)


@dataclass(eq=False)
class ClassifierTask:
    """The classifier's TrainTask: `train.images` (uint8, moved to the device once) through `prepare` into
    the model, cross-entropy with cfg.label_smoothing (sigmoid loss for one logit), accuracy on `val`
    with flip TTA as cfg.tta says."""

    train: ImageSet
    val: ImageSet | None
    cfg: TrainConfig
    device: torch.device
    # prepare(x, g): a batch of `train.images` as model input; g is the augmentation generator, None at
    # evaluation. Default: uint8 images, normalised and augmented per cfg.augment.
    prepare: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None

    def __post_init__(self):
        self.prepare = self.prepare or image_input(self.cfg.augment)
        self.labels = self.train.labels.to(self.device)

    @cached_property
    def images(self) -> torch.Tensor:
        """The training images on the device (never moved by a task whose batches come from elsewhere)."""
        return self.train.images.to(self.device)

    def batches(self, order: torch.Tensor, batch_size: int, steps: int, g: torch.Generator) -> Iterator[Batch]:
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield self.prepare(self.images[idx], g), self.labels[idx]

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return loss_fn(model(x), y, self.cfg.label_smoothing)

    def val_proba(self, model: torch.nn.Module) -> torch.Tensor:
        """The validation set's N x C probabilities."""
        return predict_proba(model, self.val.images, tta=self.cfg.tta, device=self.device, prepare=self.prepare)

    def evaluate(self, model: torch.nn.Module) -> float | None:
        if self.val is None or not len(self.val):
            return None
        return accuracy(self.val_proba(model), self.val.labels)

    def on_epoch_end(self, record: dict) -> None:
        pass


@dataclass(eq=False)
class SharedBatchTask(ClassifierTask):
    """A classifier's task on two kinds of images (`first`: a mask over `train`, e.g. its real images) whose
    every batch holds `share` of the first kind: drawn at random with replacement, so a few of them are seen
    more often, the rest of the batch from the epoch's order of the other kind. A share at or below the
    kind's own share of `train` gives the plain batches."""

    first: torch.Tensor | None = None
    share: float = 0.0

    def batches(self, order: torch.Tensor, batch_size: int, steps: int, g: torch.Generator) -> Iterator[Batch]:
        first = self.first.to(order.device)
        n_first = round(self.share * batch_size)
        if n_first <= float(first.float().mean()) * batch_size:
            yield from super().batches(order, batch_size, steps, g)
            return
        pool = first.nonzero()[:, 0]
        drawn = pool[torch.randint(len(pool), (steps * n_first,), generator=g, device=g.device).to(pool.device)]
        rest, n_rest = order[~first[order]], batch_size - n_first
        for i in range(steps):
            idx = torch.cat([drawn[i * n_first : (i + 1) * n_first], rest[i * n_rest : (i + 1) * n_rest]])
            yield self.prepare(self.images[idx], g), self.labels[idx]


def split_task(train: ImageSet, cfg: TrainConfig, device, first: torch.Tensor, share: float) -> SharedBatchTask:
    """The SharedBatchTask of a training set, split as `fit` splits one (split_data); first: a mask over it."""
    split = validation_split(train, cfg)
    if split is None:
        return SharedBatchTask(train, None, cfg, device, first=first, share=share)
    keep, held = split
    first = first[torch.as_tensor(keep)]
    return SharedBatchTask(train.subset(keep), train.subset(held), cfg, device, first=first, share=share)


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


def check_config(cfg: TrainConfig, where: str = "train") -> None:
    """Range checks of a training config: a clear error before any data is loaded or step taken."""
    a = cfg.augment

    def pair(r, lo, hi):
        return len(r) == 2 and lo <= r[0] <= r[1] <= hi

    checks = [
        ("augment.jpeg_quality", pair(a.jpeg_quality, 1, 100), "[low, high] within 1..100"),
        ("augment.downscale_range", pair(a.downscale_range, 0.125, 1), "[low, high] within 0.125..1"),
        ("augment.blur_sigma", pair(a.blur_sigma, 0.01, 3), "[low, high] within 0.01..3"),
        *((f"augment.{k}", 0 <= getattr(a, k) <= 1, "a probability in [0, 1]") for k in ("jpeg", "downscale", "blur")),
        ("batch_size", cfg.batch_size >= 1, "at least 1"),
        ("epochs", cfg.epochs >= 1, "at least 1"),
        ("lr", cfg.lr > 0, "positive"),
        ("warmup", 0 <= cfg.warmup < 1, "in [0, 1)"),
        ("val_fraction", 0 <= cfg.val_fraction < 1, "in [0, 1)"),
        ("patience", cfg.patience >= 0, "0 or more"),
        ("label_smoothing", 0 <= cfg.label_smoothing < 1, "in [0, 1)"),
    ]
    for name, ok, want in checks:
        if not ok:
            value = getattr(a, name.split(".")[1]) if name.startswith("augment.") else getattr(cfg, name)
            raise SynthgapError(f"config field '{where}.{name}': expected {want}, got {value}")


@dataclass
class Run:
    """What `fit` sets up once, before the first epoch: the task, the step budget, the model and
    everything that updates it."""

    device: torch.device
    task: TrainTask
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: object
    scaler: torch.amp.GradScaler | None
    train_sha256: str


@dataclass
class State:
    """What changes from epoch to epoch; with the model, optimizer and schedule it is what a checkpoint
    must carry for a resumed run to continue exactly where it stopped."""

    result: FitResult
    epoch: int = 0  # the next epoch to train
    step: int = 0
    seconds: float = 0.0
    best_state: dict | None = None
    stopped: bool = False


def validation_split(train: ImageSet, cfg: TrainConfig):
    """(kept, held-out) indices of the stratified `cfg.val_fraction` validation split; None without one."""
    return holdout_split(train.labels, cfg.val_fraction, seed=cfg.seed) if cfg.val_fraction > 0 else None


def split_data(train: ImageSet, val: ImageSet | None, cfg: TrainConfig) -> tuple[ImageSet, ImageSet | None]:
    """(training set, validation set): `val` if given, else a stratified `cfg.val_fraction` of `train`."""
    split = validation_split(train, cfg) if val is None else None
    if split is not None:
        train, val = train.subset(split[0]), train.subset(split[1])
    return train, val


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, desc: str = "train") -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over the parameters with requires_grad; biases and norms get no weight decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise SynthgapError(f"{desc}: the model has no trainable parameter")
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise SynthgapError(f"config field 'train.optimizer': unknown '{cfg.optimizer}' (sgd or adamw)")


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """The learning-rate schedule, stepped once per batch over `total_steps`."""
    if cfg.schedule == "onecycle" and total_steps < 4:  # too few steps to ramp up and down: constant
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    if cfg.schedule == "onecycle":
        # Each phase needs at least two steps (OneCycleLR divides by their lengths).
        pct = min(max(cfg.warmup, 2 / total_steps), 1 - 2 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=pct,
            anneal_strategy="linear",
            div_factor=10,
            final_div_factor=100,
            cycle_momentum=False,
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (
                min(1.0, (s + 1) / max(1, cfg.warmup * total_steps))
                * 0.5
                * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
            ),
        )
    raise SynthgapError(f"config field 'train.schedule': unknown '{cfg.schedule}' (onecycle or cosine)")


def setup(
    train: ImageSet | TrainTask,
    cfg: TrainConfig,
    *,
    val: ImageSet | None = None,
    budget_images: int | None = None,
    model: torch.nn.Module | None = None,
    desc: str = "train",
) -> Run:
    """Check the config, seed, split the data (a training set becomes a ClassifierTask) and build the model,
    optimizer, schedule and AMP scaler.

    The order matters: seeding comes before the model's initial weights are drawn.
    """
    check_config(cfg)
    set_threads(cfg.threads)
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    if isinstance(train, ImageSet):
        task = ClassifierTask(*split_data(train, val, cfg), cfg, device)
    elif val is not None:
        raise SynthgapError(f"{desc}: a task brings its own validation set (no `val` beside it)")
    else:
        task = train
    train = task.train
    if len(train) == 0:
        raise SynthgapError(f"{train.name or 'training set'}: no training images")

    n = len(train)
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: BN likes full batches
    total_steps = max(1, math.ceil(budget_images / batch_size)) if budget_images else steps_per_epoch * cfg.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    if model is None:
        model = build_model(cfg.model, len(train.classes), widths=cfg.widths)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg, desc)
    sched = build_scheduler(opt, cfg, total_steps)
    autocast, scaler = mixed_precision(device)
    return Run(
        device=device,
        task=task,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        epochs=epochs,
        model=model,
        optimizer=opt,
        scheduler=sched,
        autocast=autocast,
        scaler=scaler,
        train_sha256=train.sha256(),
    )


def train_one_epoch(
    run: Run, cfg: TrainConfig, epoch: int, state: State, *, desc: str = "train", progress: bool = True
) -> dict:
    """Train epoch `epoch` (0-based) from `state.step`, advancing `state.step` and `state.seconds`;
    returns the epoch's record for the history."""
    model, opt, device, batch_size = run.model, run.optimizer, run.device, run.batch_size
    g = _epoch_generator(cfg.seed, epoch, device)
    order = torch.randperm(len(run.task.train), generator=g, device=g.device).to(device)
    n_steps = min(run.steps_per_epoch, run.total_steps - state.step)  # a budget may end mid-epoch
    model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per batch
    bar = progress_bar(
        range(n_steps),
        desc=f"{desc} epoch {epoch + 1}/{run.epochs}",
        unit="batch",
        leave=False,
        enabled=progress,
        mininterval=1.0,
    )
    batches = run.task.batches(order, batch_size, n_steps, g)
    for i, batch in zip(bar, batches):
        with run.autocast():
            loss = run.task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        if run.scaler:
            run.scaler.scale(loss).backward()
            run.scaler.step(opt)
            run.scaler.update()
        else:
            loss.backward()
            opt.step()
        lr = opt.param_groups[0]["lr"]  # the rate this step used, before the schedule moves it
        run.scheduler.step()
        state.step += 1
        loss_sum += loss.detach()
        if progress and i % 10 == 9:
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{(i + 1) * batch_size / (time.perf_counter() - t0):.0f}")
    bar.close()
    batches = batch = None  # a batch source's worker processes end here, before validation starts its own
    seconds = time.perf_counter() - t0
    state.seconds += seconds
    return {
        "epoch": epoch + 1,
        "step": state.step,
        "train_loss": round(loss_sum.item() / n_steps, 4),
        "lr": round(lr, 6),
        "seconds": round(seconds, 2),
        "images_per_second": round(n_steps * batch_size / seconds, 1),
    }


def keep_best(state: State, record: dict, model: torch.nn.Module) -> None:
    """Remember the epoch to end with: the first with the best validation accuracy, or the latest
    when there is no validation set."""
    result = state.result
    if "val_accuracy" not in record:
        result.best_epoch = record["epoch"]
    elif result.best_val_accuracy is None or record["val_accuracy"] > result.best_val_accuracy:
        result.best_val_accuracy, result.best_epoch = record["val_accuracy"], record["epoch"]
        # A copy: the live tensors keep training.
        state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def log_epoch(desc: str, record: dict, epochs: int) -> None:
    """One line per epoch, printed through tqdm so it does not tear a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(
        f"{desc} epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.3f}"
        + (f", val acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else "")
        + f", {record['images_per_second']:.0f} img/s"
    )


def save_checkpoint(path: Path, run: Run, cfg: TrainConfig, state: State, epoch: int) -> None:
    """The checkpoint after epoch `epoch`: one dict with the config it was made with (atomic write)."""
    result = state.result
    save_torch(
        path,
        {
            "config": to_dict(cfg),
            "total_steps": run.total_steps,
            "epoch": epoch,
            "step": state.step,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "best_state": state.best_state,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "seconds": state.seconds,
            "train_sha256": run.train_sha256,
            "stopped": state.stopped,
        },
    )


def load_checkpoint(path: Path, run: Run, cfg: TrainConfig, state: State) -> None:
    """Restore `run` and `state` from a checkpoint made by the same config on the same data; any other
    is refused, since continuing from it would silently mix two runs."""
    ck = torch.load(path, map_location=run.device, weights_only=False)
    # The step count is part of the identity: a budget set by the caller, not by the config.
    check_resume(
        path,
        "a checkpoint",
        {
            "identity": {**recorded_identity(TrainConfig, ck["config"]), "total_steps": ck["total_steps"]},
            "data": {"train": ck["train_sha256"]},
        },
        {"identity": {**identity(cfg), "total_steps": run.total_steps}, "data": {"train": run.train_sha256}},
        remedy="remove it to start over",
    )
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    result = state.result
    state.best_state, state.epoch, state.step = ck["best_state"], ck["epoch"] + 1, ck["step"]
    result.history, result.best_epoch, result.best_val_accuracy = (
        ck["history"],
        ck["best_epoch"],
        ck["best_val_accuracy"],
    )
    state.seconds, state.stopped = ck["seconds"], ck["stopped"]


def finish(run: Run, state: State) -> FitResult:
    """The result: the model with the best epoch's weights, and the throughput over all epochs trained."""
    if state.best_state is not None:
        run.model.load_state_dict(state.best_state)
    result = state.result
    result.seconds = state.seconds
    total_images = sum(r["images_per_second"] * r["seconds"] for r in result.history)
    result.images_per_second = total_images / max(state.seconds, 1e-9)
    return result


def fit(
    train: ImageSet | TrainTask,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    val: ImageSet | None = None,
    budget_images: int | None = None,
    progress: bool = True,
    desc: str = "train",
    model: torch.nn.Module | None = None,
) -> FitResult:
    """Train `cfg.model` (or `model`) on `train`; pick the epoch with the best validation accuracy.

    train: a training set (trained as a ClassifierTask) or a TrainTask (its batches, loss, validation
    and end-of-epoch step: the detector's stages).
    val: a training set's validation set; by default `cfg.val_fraction` of it is held out (stratified).
    budget_images: total training images to process (sets the step count, so arms of different
    sizes can share one budget); default: epochs x training-set size.
    out_dir: where the per-epoch checkpoint goes (atomic); with resume=True a run continues from it.
    model: a ready module to train instead of building `cfg.model`; only parameters with
    requires_grad are optimised. A model with one output is a binary classifier (sigmoid loss).
    """
    run = setup(train, cfg, val=val, budget_images=budget_images, model=model, desc=desc)
    state = State(FitResult(model=run.model, device=str(run.device)))
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir else None
    if resume and ckpt_path and ckpt_path.exists():
        load_checkpoint(ckpt_path, run, cfg, state)

    for epoch in range(state.epoch, run.epochs):
        if state.step >= run.total_steps or state.stopped:
            break
        record = train_one_epoch(run, cfg, epoch, state, desc=desc, progress=progress)
        val_accuracy = run.task.evaluate(run.model)
        if val_accuracy is not None:
            record["val_accuracy"] = val_accuracy
        keep_best(state, record, run.model)
        state.result.history.append(record)
        if progress:
            log_epoch(desc, record, run.epochs)
        # Decided before the checkpoint is written, so a run resumed after an early stop stays stopped.
        state.stopped = bool(cfg.patience and epoch + 1 - state.result.best_epoch >= cfg.patience)
        run.task.on_epoch_end(record)
        if ckpt_path:
            save_checkpoint(ckpt_path, run, cfg, state, epoch)
        if state.stopped:
            break
    return finish(run, state)
