"""Train, evaluate and save a detector, with the core's training loop.

Stage 1 trains the head on a frozen backbone (on features extracted once, by default); stage 2
unfreezes the top blocks at a lower learning rate. A backbone without pretrained weights trains
end to end in one stage. The threshold is chosen on validation; test is touched once, at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgap import SynthgapError
from synthgap.artifacts import KINDS
from synthgap.audit import audit_record, check_dedupe
from synthgap.config import dump_yaml, to_dict
from synthgap.data.sets import ImageSet
from synthgap.data.sides import CLASSES
from synthgap.detect.config import DetectorConfig, from_scratch, ignored_stage_fields
from synthgap.detect.crops import InputChain, RandomCrops, predict_views, resolve_input
from synthgap.detect.data import DetectorData
from synthgap.detect.domain import KNN_BANK, content_record, content_scores, training_domain
from synthgap.detect.evaluate import (
    binary_metrics,
    choose_threshold,
    curves,
    per_source_rows,
    selective,
    set_robustness,
)
from synthgap.detect.model import Detector, DetectorBundle, LevelHeads, build_detector
from synthgap.detect.probes import CONTENT_SIZE, probe_config, probes_record, seen_metadata
from synthgap.detect.report import write_detector_report
from synthgap.device import select_device, set_threads
from synthgap.io import environment, write_json, write_text
from synthgap.models.registry import BACKBONES, lookup
from synthgap.runs import RunDir, identity_hash
from synthgap.train.config import TrainConfig
from synthgap.train.evaluate import loss_fn
from synthgap.train.loop import ClassifierTask, fit

log = logging.getLogger("synthgap")


def check_detector_config(cfg: DetectorConfig) -> None:
    """Every field a run will use, checked before any image is decoded."""
    from synthgap.train.loop import check_config

    for name, stage in (("head", cfg.head), ("finetune", cfg.finetune), ("scratch", cfg.scratch)):
        check_config(stage, where=name)
    checks = [
        ("head_width", cfg.head_width >= 1, "at least 1"),
        ("dropout", 0 <= cfg.dropout < 1, "in [0, 1)"),
        (
            "input_size",
            cfg.input_size is None or (cfg.input_size >= 32 and cfg.input_size % 32 == 0),
            "a multiple of 32, or null",
        ),
        ("train_size", cfg.train_size is None or cfg.train_size >= 1, "at least 1, or null (all)"),
        ("test_size", cfg.test_size is None or cfg.test_size >= 1, "at least 1, or null (all)"),
        ("val_fraction", 0 < cfg.val_fraction < 1, "in (0, 1)"),
        ("real_quantile", cfg.real_quantile is None or 0 < cfg.real_quantile < 1, "in (0, 1), or null"),
        (
            "head_per_block",
            not cfg.head_per_block or len(set(cfg.feature_blocks or [])) >= 2,
            "false unless feature_blocks names two blocks or more",
        ),
    ]
    for name, ok, want in checks:
        if not ok:
            raise SynthgapError(f"config field '{name}': expected {want}, got {getattr(cfg, name)}")
    lookup("backbone", cfg.backbone, field="config field 'backbone'")
    if (cfg.backbone_model or cfg.backbone_revision) and not BACKBONES[cfg.backbone].hub_id:
        hub = ", ".join(n for n, b in BACKBONES.items() if b.hub_id)
        raise SynthgapError(f"config field 'backbone_model': only for the hub backbones ({hub}), not '{cfg.backbone}'")
    if cfg.finetune_blocks < 0:
        raise SynthgapError(f"config field 'finetune_blocks': expected 0 or more, got {cfg.finetune_blocks}")
    if cfg.image_size < 8:
        raise SynthgapError(f"config field 'image_size': expected at least 8, got {cfg.image_size}")
    for name, ok, want in (
        ("input", cfg.input in ("crop", "resize"), "crop or resize"),
        ("crop_size", cfg.crop_size >= 32 and cfg.crop_size % 32 == 0, "a multiple of 32"),
        ("crop_grid", 1 <= cfg.crop_grid <= 8, "1..8 (windows per side)"),
        ("workers", cfg.workers >= 0, "0 or more"),
        ("in_memory_mb", cfg.in_memory_mb >= 0, "0 or more"),
    ):
        if not ok:
            raise SynthgapError(f"config field '{name}': expected {want}, got {getattr(cfg, name)!r}")
    check_dedupe(cfg.dedupe)
    for name, value, ok, want in (
        (
            "window_rescale",
            cfg.window_rescale,
            lambda r: 0.25 <= r[0] <= r[1] <= 1,
            "[low, high] with 0.25 <= low <= high <= 1",
        ),
        ("window_jpeg", cfg.window_jpeg, lambda r: 1 <= r[0] <= r[1] <= 100, "[low, high] qualities within 1..100"),
    ):
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 2 and ok(value)):
            raise SynthgapError(f"config field '{name}': expected {want}, or null, got {value!r}")
    if cfg.eval_jpeg is not None and not 1 <= cfg.eval_jpeg <= 100:
        raise SynthgapError(f"config field 'eval_jpeg': expected 1..100, or null, got {cfg.eval_jpeg}")
    if not 1 <= cfg.normalize_quality <= 100:
        raise SynthgapError(f"config field 'normalize_quality': expected 1..100, got {cfg.normalize_quality}")


def check_run_config(cfg: DetectorConfig) -> None:
    """At the start of a run (or study): check_detector_config, and one warning per stage field the detector
    overrides or never reads (ignored_stage_fields)."""
    check_detector_config(cfg)
    for line in ignored_stage_fields(cfg):
        log.warning("%s", line)


def input_chain(cfg: DetectorConfig, train: ImageSet) -> tuple[InputChain, str]:
    """The input chain of a run on `train` (crops only for photo-sized files) and why it was chosen."""
    mode, why = resolve_input(cfg.input, cfg.crop_size, train.files, seed=cfg.seed)
    crop = mode == "crop"
    normalize = cfg.normalize_quality if cfg.normalize_format else cfg.eval_jpeg if crop else None
    return InputChain(
        mode,
        cfg.image_size,
        cfg.crop_size,
        cfg.crop_grid,
        normalize,
        tuple(cfg.window_rescale) if crop and cfg.window_rescale else None,
        tuple(cfg.window_jpeg) if crop and cfg.window_jpeg else None,
    ), why


def new_detector(cfg: DetectorConfig, chain: InputChain) -> Detector:
    """The untrained detector of a config; crops reach the backbone at their own size (no resampling)."""
    return build_detector(
        cfg.backbone,
        pretrained=cfg.pretrained,
        input_size=cfg.input_size or (chain.crop_size if chain.crop else None),
        head_width=cfg.head_width,
        dropout=cfg.dropout,
        model_id=cfg.backbone_model,
        revision=cfg.backbone_revision,
        blocks=cfg.feature_blocks,
        head_per_block=cfg.head_per_block,
    )


def stage1_features(
    model: Detector,
    data: DetectorData,
    chain: InputChain,
    device,
    *,
    workers: int = 2,
    progress: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen backbone's features of the training and validation images: N x F, or with crops
    N x V x F (every evaluation window of every image; for training images, V seeded training windows
    when the chain rescales or re-encodes them)."""
    if not chain.crop:
        return (
            extract_features(model, data.train.images, device, progress=progress, desc="features train"),
            extract_features(model, data.val.images, device, progress=progress, desc="features val"),
        )
    return tuple(
        view_features(
            model,
            s.files,
            chain,
            device,
            workers=workers,
            progress=progress,
            desc=f"features {split}",
            train_seed=seed if split == "train" else None,
        )
        for split, s in (("train", data.train), ("val", data.val))
    )


@torch.no_grad()
def view_features(
    model: Detector,
    files: list[str],
    chain: InputChain,
    device,
    *,
    workers: int = 2,
    progress: bool = True,
    desc: str = "features",
    train_seed: int | None = None,
) -> torch.Tensor:
    from synthgap.detect.crops import eval_batches
    from synthgap.io import progress_bar
    from synthgap.train.augment import normalize

    model.eval()
    # Filled in place: the one set-sized tensor of stage 1 (V x F floats per image), never held twice
    out = torch.empty(len(files), chain.views, model.backbone.num_features)
    for index, x in progress_bar(
        eval_batches(files, chain, workers=workers, train_seed=train_seed),
        total=-(-len(files) // 8),
        desc=desc,
        unit="batch",
        enabled=progress,
        leave=False,
    ):
        n, v = x.shape[:2]
        chunks = x.flatten(0, 1).split(max(8, 256 * 64 * 64 // chain.crop_size**2))  # memory follows pixels
        out[index] = torch.cat(
            [
                model.features(normalize(c.to(device)).contiguous(memory_format=torch.channels_last)).float().cpu()
                for c in chunks
            ]
        ).view(n, v, -1)
    return out


@torch.no_grad()
def extract_features(
    model: Detector, images: torch.Tensor, device, batch_size: int = 256, progress: bool = True, desc: str = "features"
) -> torch.Tensor:
    from synthgap.io import progress_bar
    from synthgap.train.augment import normalize
    from synthgap.train.evaluate import MAX_BATCH_PIXELS

    model.eval()
    if images.ndim == 4:  # memory follows the pixels of a batch
        batch_size = min(batch_size, max(8, MAX_BATCH_PIXELS // (images.shape[-1] * images.shape[-2])))
    out = []
    for i in progress_bar(range(0, len(images), batch_size), desc=desc, unit="batch", enabled=progress, leave=False):
        x = normalize(images[i : i + batch_size].to(device)).contiguous(memory_format=torch.channels_last)
        out.append(model.features(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.backbone.num_features)


def _as_features(s: ImageSet, feats: torch.Tensor) -> ImageSet:
    return ImageSet(feats, s.labels, s.classes, s.name + "[features]", s.domain)


@dataclass(eq=False)
class StageTask(ClassifierTask):
    """A detector stage's task (synthgap.train.loop.TrainTask): a classifier's, with each epoch counted
    by its trainer across stages."""

    trainer: DetectorTrainer | None = None

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        heads = model.head if isinstance(model, Detector) else model
        if not isinstance(heads, LevelHeads):
            return super().loss(model, batch)
        x, y = batch  # one head a level, each with a loss of its own (LevelHeads: they learn apart)
        each = heads.each(model.features(x) if heads is not model else x)
        return sum(loss_fn(logits, y, self.cfg.label_smoothing) for logits in each.split(1, 1)) / each.shape[1]

    def on_epoch_end(self, record: dict) -> None:
        self.trainer.epoch_done(record)


@dataclass(eq=False)
class CropStage(StageTask):
    """A stage on the images' windows (input: crop): a random window of each image per epoch (RandomCrops);
    validation averages the probabilities of every evaluation window of an image."""

    crops: RandomCrops | None = None

    def batches(self, order: torch.Tensor, batch_size: int, steps: int, g: torch.Generator):
        source = self.crops.epoch(order, batch_size, steps, g)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield self.prepare(next(source).to(self.device), g), self.labels[idx]

    def val_proba(self, model: torch.nn.Module) -> torch.Tensor:
        t = self.trainer
        return predict_views(
            model,
            self.val.files,
            t.chain,
            prepare=self.prepare,
            tta=self.cfg.tta,
            device=self.device,
            workers=t.cfg.workers,
        ).mean(1)


@dataclass(eq=False)
class WindowHeadStage(StageTask):
    """The head on cached window features: every window of a training image is a sample; validation averages
    the head's probabilities over the windows of an image (`windows`: the validation features, N x V x F)."""

    windows: torch.Tensor | None = None

    @torch.no_grad()
    def val_proba(self, head: torch.nn.Module) -> torch.Tensor:
        from synthgap.train.evaluate import logits_to_proba

        head.eval()
        n, views = self.windows.shape[:2]
        return logits_to_proba(head(self.windows.flatten(0, 1).to(self.device))).cpu().view(n, views, -1).mean(1)


def _features_as_is(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    return x


class DetectorTrainer:
    """One run of a detector's stages (synthgap.train.loop.fit, one method per stage), in `out`/stages/STAGE.

    on_epoch(record): called after every epoch of every stage, `record['stage_epoch']` counting on
    across stages (Optuna's pruner reports there).
    """

    def __init__(
        self,
        data: DetectorData,
        cfg: DetectorConfig,
        out: str | Path | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None,
    ):
        check_detector_config(cfg)
        self.data, self.cfg, self.out = data, cfg, Path(out) if out else None
        self.resume, self.progress, self.on_epoch = resume, progress, on_epoch
        self.device = select_device(cfg.head.device)
        set_threads(cfg.head.threads)
        torch.manual_seed(cfg.seed)
        self.chain, _ = input_chain(cfg, data.train)
        self.model = new_detector(cfg, self.chain).to(self.device)
        self.history: dict[str, dict] = {}
        self.epochs = 0  # over every stage: the records' stage_epoch
        self.crops: RandomCrops | None = None  # built once, at the first stage that trains on images

    def run(self, features: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[Detector, dict]:
        """Every stage of the config; returns the model (best validation epoch of the last stage) and the
        stage histories. features: as `head` takes them."""
        if from_scratch(self.cfg):
            self.scratch()
            return self.model, self.history
        self.head(features)
        if self.cfg.finetune_blocks > 0:
            self.finetune()
        return self.model, self.history

    def scratch(self) -> None:
        """The whole network, end to end (a backbone without pretrained weights)."""
        self.model.backbone.set_trainable(-1)
        self.fit("scratch", self.image_task(self.cfg.scratch), self.model)

    def head(self, features: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """The head on the frozen backbone: on its features, extracted once (cache_features), or on images.
        features: (train, val) features of the frozen backbone, when already extracted (a tuning study
        extracts them once for all its trials)."""
        cfg, data = self.cfg, self.data
        self.model.backbone.set_trainable(0)
        if not cfg.cache_features:
            self.fit("head", self.image_task(cfg.head), self.model)
            return
        t0 = time.perf_counter()
        f_train, f_val = features or stage1_features(
            self.model, data, self.chain, self.device, workers=cfg.workers, progress=self.progress, seed=cfg.seed
        )
        seconds = time.perf_counter() - t0
        stage = dataclasses.replace(cfg.head, tta=False, seed=cfg.seed)
        if self.chain.crop:  # every window of a training image is a sample
            views = f_val.shape[1]
            train = ImageSet(
                f_train.flatten(0, 1),
                data.train.labels.repeat_interleave(views),
                data.train.classes,
                data.train.name + "[window features]",
                data.train.domain,
            )
            val = _as_features(data.val, f_val[:, 0])
            task = WindowHeadStage(train, val, stage, self.device, _features_as_is, trainer=self, windows=f_val)
        else:
            task = StageTask(
                _as_features(data.train, f_train),
                _as_features(data.val, f_val),
                stage,
                self.device,
                _features_as_is,
                trainer=self,
            )
        self.fit("head", task, self.model.head)
        self.history["head"]["feature_seconds"] = round(seconds, 2)

    def finetune(self) -> None:
        """The top `finetune_blocks` blocks of the backbone with the head, at the fine-tuning rate."""
        self.model.backbone.set_trainable(self.cfg.finetune_blocks)
        self.fit("finetune", self.image_task(self.cfg.finetune), self.model)

    def image_task(self, stage: TrainConfig) -> StageTask:
        """The task of a stage that reads images: whole (input: resize) or their windows (input: crop)."""
        cfg = self.cfg
        stage = dataclasses.replace(stage, seed=cfg.seed)
        device = select_device(stage.device)  # where fit puts the model
        if not self.chain.crop:
            return StageTask(self.data.train, self.data.val, stage, device, trainer=self)
        if self.crops is None:
            self.crops = RandomCrops(
                self.data.train.files,
                self.chain,
                workers=cfg.workers,
                in_memory_mb=cfg.in_memory_mb,
                progress=self.progress,
            )
        return CropStage(self.data.train, self.data.val, stage, device, trainer=self, crops=self.crops)

    def fit(self, stage: str, task: StageTask, module: torch.nn.Module) -> None:
        res = fit(
            task,
            task.cfg,
            model=module,
            out_dir=self.out / "stages" / stage if self.out else None,
            resume=self.resume,
            progress=self.progress,
            desc=f"{self.cfg.backbone} {stage}",
        )
        self.history[stage] = {
            "history": res.history,
            "best_epoch": res.best_epoch,
            "best_val_accuracy": res.best_val_accuracy,
            "seconds": round(res.seconds, 2),
            "images_per_second": round(res.images_per_second, 1),
        }

    def epoch_done(self, record: dict) -> None:
        self.epochs += 1
        if self.on_epoch:
            self.on_epoch({**record, "stage_epoch": self.epochs})


def train_detector(
    data: DetectorData,
    cfg: DetectorConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[Detector, dict]:
    """Every stage (DetectorTrainer); returns the model (best validation epoch of the last stage) and the
    stage histories.

    features: (train, val) features of the frozen backbone, when already extracted (a tuning study
    extracts them once for all its trials).

    on_epoch(record): called after every epoch of every stage, `record['stage_epoch']` counting on
    across stages (Optuna's pruner reports there).
    """
    return DetectorTrainer(data, cfg, out, resume=resume, progress=progress, on_epoch=on_epoch).run(features)


def tta_of(cfg: DetectorConfig) -> bool:
    """Flip TTA as the last stage evaluated with it (features cached: no flip)."""
    if from_scratch(cfg):
        return cfg.scratch.tta
    if cfg.finetune_blocks > 0:
        return cfg.finetune.tta
    return cfg.head.tta and not cfg.cache_features


def evaluation_bundle(model: Detector, cfg: DetectorConfig, chain: tuple[InputChain, str]) -> DetectorBundle:
    """The model as a bundle that reads the loaded splits as they are: their thumbnails are already
    format-normalised (only freshly degraded images need it again); crops are cut from the files,
    normalised as they are read."""
    meta = bundle_meta(cfg, threshold=0.5, model=model, chain=chain)
    if not chain[0].crop:
        meta = {**meta, "preprocessing": {**meta["preprocessing"], "normalize_format": None}}
    return DetectorBundle(model.eval(), meta)


def content_domain(model: Detector, data: DetectorData, cfg: DetectorConfig) -> tuple[torch.Tensor, dict, np.ndarray]:
    """The content check of detect.domain: (the feature bank of up to KNN_BANK training images, each file
    once; the domain's `content` record, its threshold from validation; the test images' content scores)."""
    loaded = evaluation_bundle(model, cfg, input_chain(cfg, data.train))
    train = data.train
    keys = train.files or list(range(len(train)))
    first = np.unique(np.asarray(keys, dtype=object if train.files else np.int64), return_index=True)[1]
    cap = KNN_BANK if not loaded.chain.crop else KNN_BANK // 3  # a photo's 9 windows cost 9 images
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(first)[:cap])
    bank = loaded.set_features(train.subset(pick), workers=cfg.workers)
    record = content_record(bank, loaded.set_features(data.val, workers=cfg.workers))
    scores = content_scores(loaded.set_features(data.test, workers=cfg.workers), bank).numpy()
    return bank, record, scores


def evaluate_detector(
    model: Detector,
    data: DetectorData,
    cfg: DetectorConfig,
    *,
    robustness: bool = True,
    progress: bool = False,
    content: tuple[dict, np.ndarray] | None = None,
) -> dict:
    """Threshold on validation, then every test figure at that threshold; per source; with `content` (the
    domain's content record and the test images' scores), accuracy against coverage of the images it decides."""
    chain, why = input_chain(cfg, data.train)
    loaded = evaluation_bundle(model, cfg, (chain, why))
    meta = loaded.meta
    p_val = loaded.predict_set(data.val, workers=cfg.workers, progress=progress).numpy()
    threshold = choose_threshold(data.val.labels.numpy(), p_val)
    p_test = loaded.predict_set(data.test, workers=cfg.workers, progress=progress).numpy()
    y_test = data.test.labels.numpy()
    result = {
        "threshold": threshold,
        "val": binary_metrics(data.val.labels.numpy(), p_val, threshold),
        "test": binary_metrics(y_test, p_test, threshold),
        "test_at_0.5": binary_metrics(y_test, p_test, 0.5),
        "curves": curves(y_test, p_test),
        "per_source": per_source_rows(y_test, p_test, data.test.sources, threshold),
        "selective": selective(
            y_test,
            p_test,
            threshold,
            None if content is None or "threshold" not in content[0] else content[1] <= content[0]["threshold"],
        ),
    }
    real_val = p_val[data.val.labels.numpy() == 0]
    if cfg.real_quantile is not None and len(real_val):  # "real" only below it (detect.domain.verdicts)
        bound = min(float(np.quantile(real_val, cfg.real_quantile)), threshold)
        result["real_bound"] = {"quantile": cfg.real_quantile, "p": round(bound, 6), "n_val_real": len(real_val)}
    if robustness:
        result["robustness"], result["robustness_on"] = set_robustness(
            DetectorBundle(model, {**meta, "threshold": threshold}),
            data.test,
            y_test,
            p_test,
            seed=cfg.seed,
            workers=cfg.workers,
        )
    return result


def content_probe(data, cfg, *, progress: bool = False) -> dict:
    """The content probe's test figures (synthgap.detect.probes) on `data` (a DetectorData), or why it was not run."""
    chain, _ = input_chain(cfg, data.train)
    if not cfg.content_probe:
        return {"skipped": "content_probe: false in the config"}
    if not chain.crop and cfg.image_size <= CONTENT_SIZE:
        return {"skipped": f"the detector itself reads {cfg.image_size} px thumbnails: its input is content-sized"}
    probe_cfg = probe_config(cfg)
    probe_data = dataclasses.replace(
        data, train=_thumbnails(data.train), val=_thumbnails(data.val), test=_thumbnails(data.test)
    )
    t0 = time.perf_counter()
    model, _ = train_detector(probe_data, probe_cfg, progress=progress)
    result = evaluate_detector(model, probe_data, probe_cfg, robustness=False)
    test = result["test"]
    return {
        "image_size": CONTENT_SIZE,
        "recipe": f"{cfg.backbone} + the shared head on {CONTENT_SIZE} px thumbnails of the same splits",
        "auc": test["auc"],
        "accuracy": test["accuracy"],
        "n": test["n"],
        "per_source": result["per_source"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _thumbnails(s):
    """The set at CONTENT_SIZE px (its loaded thumbnails, shrunk when they are larger)."""
    x = s.images
    if x.shape[-1] != CONTENT_SIZE:
        x = (
            torch.nn.functional.interpolate(
                x.float(), size=(CONTENT_SIZE, CONTENT_SIZE), mode="bilinear", antialias=True
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    return ImageSet(x, s.labels, s.classes, f"{s.name}[{CONTENT_SIZE}px]", s.domain, sources=s.sources)


def bundle_meta(
    cfg: DetectorConfig, threshold: float, model: Detector | None = None, chain: tuple[InputChain, str] | None = None
) -> dict:
    info = BACKBONES[cfg.backbone]
    chain, why = chain or (
        InputChain("resize", cfg.image_size, normalize_format=cfg.normalize_quality if cfg.normalize_format else None),
        "input: resize",
    )
    input_size = cfg.input_size or (chain.crop_size if chain.crop else info.input_size)
    return {
        **KINDS["detector"].stamp(),  # kind, format_version (synthgap.artifacts)
        "classes": list(CLASSES),
        "architecture": {
            "backbone": cfg.backbone,
            "input_size": input_size,
            "head_width": cfg.head_width,
            "dropout": cfg.dropout,
            **({"blocks": list(cfg.feature_blocks)} if cfg.feature_blocks else {}),
            **({"head_per_block": True} if cfg.head_per_block else {}),
            "pretrained": not from_scratch(cfg),
            "about": info.about,
            **({"hub": model.backbone.hub} if model is not None and model.backbone.hub else {}),
        },
        "preprocessing": {
            "input": chain.input,
            "input_why": why,
            "image_size": cfg.image_size,
            **(
                {
                    "crop_size": chain.crop_size,
                    "crop_grid": chain.crop_grid,
                    "views": chain.views,
                    "small_images": f"upscaled (bicubic) until the shorter side is {chain.crop_size} px",
                }
                if chain.crop
                else {}
            ),
            "resample": "bicubic (PIL), antialiased",
            "normalize_format": chain.normalize_format,
            **(chain.record() if chain.crop else {}),
            "input_size": input_size,
            "mean": list(info.mean),
            "std": list(info.std),
        },
        "threshold": threshold,
        "tta": tta_of(cfg),
    }


def format_bias(data: DetectorData, cfg: DetectorConfig) -> dict:
    """The format-bias audit of the training files (or of their re-encoded bytes, when normalised)."""
    from synthgap.detect.audit import audit_files, audit_format_bias, metadata_of_bytes

    train = data.train
    if cfg.normalize_format:
        from synthgap.train.robust import jpeg_bytes

        rng = np.random.default_rng(cfg.seed)
        metas = {0: [], 1: []}
        for label in (0, 1):
            idx = np.flatnonzero(train.labels.numpy() == label)
            for i in rng.choice(idx, min(2000, len(idx)), replace=False):
                metas[label].append(metadata_of_bytes(jpeg_bytes(train.images[i], cfg.normalize_quality)))
        result = audit_format_bias(metas[0], metas[1], seed=cfg.seed)
        result["on"] = f"training images after --normalize-format (JPEG q{cfg.normalize_quality})"
        return result
    if not train.files:
        return {
            "biased": None,
            "verdict": "not run: the training images did not come from files (e.g. CIFAR-10 batches)",
        }
    files = np.asarray(train.files)
    y = train.labels.numpy()
    result = audit_files(list(files[y == 0]), list(files[y == 1]), seed=cfg.seed)
    result["on"] = "training files as stored"
    seen = seen_metadata(train, input_chain(cfg, train)[0], seed=cfg.seed)
    if seen:
        result["seen_by_model"] = seen
    return result


def data_record(data: DetectorData) -> dict:
    """What a detector folder records of its data: each split's description with its hash."""
    return {k: s.describe() for k, s in (("train", data.train), ("val", data.val), ("test", data.test))}


def run_folder(out: Path) -> RunDir:
    """A detector folder as a run folder: config.yaml, with the data in environment.json."""
    return RunDir(out, "config.yaml", "a detector run", data_record="environment.json")


def data_environment(data: DetectorData, cfg: DetectorConfig, out: Path, audit_page: bool = True) -> dict:
    """environment.json of a detector folder (versions, config hash, data hashes, the data audit's counts),
    and (audit_page) the audit's pairs in out/audit/."""
    env = environment()
    env.update(
        {
            "config_hash": identity_hash(cfg),
            "data": data_record(data),
            "specs": data.specs,
            "audit": audit_record(data.audit, cfg.dedupe),
        }
    )
    if data.audit and audit_page:
        data.audit.write(out / "audit")
    write_json(out / "environment.json", env)
    return env


def run_detector(
    data: DetectorData,
    cfg: DetectorConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    audit_page: bool = True,
    robustness: bool = True,
) -> dict:
    """`synthgap detector train`: train, evaluate, audit, save the bundle and the report in `out`.
    robustness: the robustness table (every test window degraded 7 ways: the slowest part of evaluating a
    photo detector)."""
    check_run_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        run_folder(out).claim(cfg, data=data_record(data), remedy="use a new --out, or drop --resume to start over")
    write_text(out / "config.yaml", dump_yaml(cfg))
    (out / "detector.json").unlink(missing_ok=True)  # a bundle is complete only once its new detector.json is written
    env = data_environment(data, cfg, out, audit_page)
    bias = format_bias(data, cfg)
    write_json(out / "format_bias.json", bias)
    t0 = time.perf_counter()
    model, history = train_detector(data, cfg, out, resume=resume, progress=progress)
    train_seconds = time.perf_counter() - t0
    bank, content, test_scores = content_domain(model, data, cfg)
    result = evaluate_detector(model, data, cfg, content=(content, test_scores), robustness=robustness)
    meta = bundle_meta(cfg, result["threshold"], model, input_chain(cfg, data.train))
    test = result["test"]
    probe = content_probe(data, cfg, progress=progress)
    domain = training_domain(data.train, cfg, {side: list(v) for side, v in data.sources.items()}, cfg.seed)
    meta.update(
        {
            "metrics": {
                k: test[k] for k in ("accuracy", "auc", "average_precision", "f1_synthetic", "ece", "brier", "n")
            },
            "robustness": result.get("robustness", []),
            "format_bias": {"biased": bias.get("biased"), "verdict": bias.get("verdict")},
            "probes": probes_record(test, bias, probe),
            **({"real_bound": result["real_bound"]} if "real_bound" in result else {}),
            "per_source": result["per_source"],
            "data_audit": env["audit"],
            "sources": data.sources,
            "domain": {**domain, "content": content},
            "training": {
                "seconds": round(train_seconds, 1),
                "stages": {k: {kk: v[kk] for kk in ("best_epoch", "seconds")} for k, v in history.items()},
            },
            "config": to_dict(cfg),
            "config_hash": identity_hash(cfg),
            "data": env["data"],
            "specs": data.specs,
            "versions": {k: env[k] for k in ("synthgap", "torch", "torchvision", "python")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    write_json(out / "metrics.json", {**result, "history": history, "train_seconds": round(train_seconds, 1)})
    DetectorBundle(model.cpu(), meta, bank if "threshold" in content else None).save(out)
    write_detector_report(out)
    return meta
