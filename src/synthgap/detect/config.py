"""The detector's config: a backbone, the shared head and its training stages, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap import ANIMALS
from synthgap.models.registry import BACKBONES
from synthgap.train.config import AugmentConfig, TrainConfig


def _head_stage() -> TrainConfig:
    return TrainConfig(
        epochs=10,
        batch_size=256,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-4,
        schedule="cosine",
        warmup=0.05,
        label_smoothing=0.0,
        tta=False,
        augment=AugmentConfig(crop_pad=0, flip=False),
    )


def _finetune_stage() -> TrainConfig:
    return TrainConfig(
        epochs=3,
        batch_size=128,
        optimizer="adamw",
        lr=3e-4,
        weight_decay=1e-4,
        schedule="cosine",
        warmup=0.1,
        label_smoothing=0.0,
        tta=True,
        augment=AugmentConfig(crop_pad=0, flip=True, jpeg=0.2, downscale=0.1, blur=0.1),
    )


def _scratch_stage() -> TrainConfig:
    return TrainConfig(
        epochs=10,
        label_smoothing=0.0,
        tta=True,
        augment=AugmentConfig(crop_pad=2, flip=True, jpeg=0.2, downscale=0.1, blur=0.1),
    )


@dataclass
class DetectorConfig:
    """Real-vs-synthetic detector: a backbone, the shared head, and up to two training stages.

    Stage configs are TrainConfigs; the detector decides some of their fields for every stage (`model`
    and `widths`: the backbone; `seed` and `val_fraction`: the detector's own; with cache_features, the
    head's `tta` and `augment`): one set otherwise is reported, not used (ignored_stage_fields).
    A pretrained backbone trains `head` (backbone frozen) then `finetune` (top blocks unfrozen);
    a backbone without weights (airnet, or --no-pretrained) trains end to end with `scratch`.
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    backbone_model: str | None = None  # hub backbones (clip_vit_l14, dinov2_base): another model id or a local folder
    backbone_revision: str | None = None  # ... and its hub revision (a commit or tag), recorded in the bundle
    input_size: int | None = None  # backbone input resolution; None: the backbone's CPU default
    # The head reads the pooled outputs of these backbone blocks (counted from the bottom), side by side; the
    # blocks above the highest are dropped. null: the top block's. [4]: low-level features alone, how an image
    # was made more than what it shows; [4, 9]: both levels (intermediate blocks generalise better across
    # generators: RINE, ECCV 2024).
    feature_blocks: list[int] | None = None
    # With feature_blocks of several blocks: one head per block instead of one over all, the detector's logit
    # the mean of theirs, each head trained on its own loss ([4, 9]: a low-level and a top-level detector on
    # one backbone pass; one head over both leans on the top block).
    head_per_block: bool = False
    head_width: int = 128
    dropout: float = 0.3
    cache_features: bool = True  # stage 1 on features extracted once (no augmentation), not on images
    finetune_blocks: int = 2  # top backbone blocks trained in stage 2 (0: no stage 2)
    classes: list[str] = field(default_factory=lambda: list(ANIMALS))  # content classes taken from class folders
    image_size: int = 32  # images are decoded to this square size, both sides alike (input: resize, and the audit)
    # crop: the model sees crop_size windows of each image's own pixels (photo-sized data; thumbnail-sized
    # data such as CIFAR-10 is taken whole either way); resize: each image whole at image_size.
    input: str = "crop"
    crop_size: int = 224
    crop_grid: int = 3  # crop_grid x crop_grid windows averaged at evaluation and prediction
    workers: int = 2  # DataLoader processes that decode and cut the crops of sets too large for memory
    in_memory_mb: int = 1024  # a crop-mode training set whose native pixels fit in this is decoded once
    val_fraction: float = 0.1
    train_size: int | None = None  # cap per side (real, synthetic); None: all
    test_size: int | None = None
    normalize_format: bool = False  # re-encode both sides identically (JPEG) before anything else
    normalize_quality: int = 90
    # input: crop (photo-sized data), both sides alike, so that size, format and compression separate nothing:
    # every training window shrunk by a random factor in window_rescale and re-encoded as JPEG at a random
    # quality in window_jpeg; in evaluation and use, every image re-encoded once at eval_jpeg (null: off).
    window_rescale: list[float] | None = field(default_factory=lambda: [0.67, 1.0])
    window_jpeg: list[int] | None = field(default_factory=lambda: [65, 100])
    eval_jpeg: int | None = 95
    content_probe: bool = True  # train the same head on 32 px thumbnails: what content alone gives (photo data)
    # Answer "real" only below this quantile of the validation real images' P(synthetic), "unsure" between it and
    # the threshold: the threshold is chosen on the generators trained on, and an unseen generator's images score
    # lower, so below the threshold is not yet confidently real (docs/detector.md). null: the threshold alone.
    real_quantile: float | None = None
    dedupe: str = "drop"  # drop | warn | off: the data audit before training, as in TransferConfig
    seed: int = 0
    head: TrainConfig = field(default_factory=_head_stage)
    finetune: TrainConfig = field(default_factory=_finetune_stage)
    scratch: TrainConfig = field(default_factory=_scratch_stage)


# --quick: a first look at a detector in minutes.
DETECTOR_QUICK = {
    "train_size": 2000,
    "test_size": 1000,
    "head": {"epochs": 6},
    "finetune": {"epochs": 1},
    "scratch": {"epochs": 6},
}


def from_scratch(cfg: DetectorConfig) -> bool:
    """Whether a DetectorConfig trains its backbone from scratch: no pretrained weights asked for, or none exist."""
    return not (cfg.pretrained and BACKBONES[cfg.backbone].pretrainable)


# The fields of a stage config the detector decides for every stage, and who decides them.
STAGE_OVERRIDES = {
    "model": "the detector's 'backbone' is the model",
    "widths": "the detector's 'backbone' is the model",
    "seed": "every stage takes the detector's 'seed'",
    "val_fraction": "the detector's 'val_fraction' splits the data once, for every stage",
}


def ignored_stage_fields(cfg: DetectorConfig) -> list[str]:
    """One line per field of a stage config that the detector overrides or never reads, set to other than
    its default (the fields stay in the schema, so older configs and run folders still load)."""
    lines = []
    for name, default in (("head", _head_stage()), ("finetune", _finetune_stage()), ("scratch", _scratch_stage())):
        stage = getattr(cfg, name)
        for field_name, why in STAGE_OVERRIDES.items():
            value = getattr(stage, field_name)
            if value != getattr(default, field_name) and value != getattr(cfg, field_name, None):
                lines.append(f"config field '{name}.{field_name}' ({value}) is ignored: {why}")
    if cfg.cache_features and not from_scratch(cfg):
        why = "with cache_features the head trains and validates on features extracted once (no flip, no augmentation)"
        lines += [
            f"config field 'head.{field_name}' is ignored: {why}"
            for field_name in ("tta", "augment")
            if getattr(cfg.head, field_name) != getattr(_head_stage(), field_name)
        ]
    return lines
