"""The configs of the study: the transfer study (synthgap transfer) and the whole pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap import ANIMALS
from synthgap.detect.config import DetectorConfig
from synthgap.generate.config import GenerateConfig, GeneratorConfig
from synthgap.train.config import AugmentConfig, TrainConfig

# The gap-closing arms of the transfer study: what each needs beyond the synthetic set (it decides where the arm
# is usable), and whether it adapts to the real images before they are tested (BatchNorm statistics re-estimated
# on, or students trained with, unlabelled real images: "transductive", its accuracy is not that of a model
# trained on synthetic images alone, so the tables label it).
GAP_CLOSING = {
    "finetune": ("real labels", False),
    "adabn": ("unlabelled real images", True),
    "augment": ("nothing", False),
    "filter": ("real labels", False),
    "selftrain": ("unlabelled real images", True),
}


@dataclass
class TransferConfig:
    classes: list[str] = field(default_factory=lambda: list(ANIMALS))
    image_size: int = 32
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fractions: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    extra_synthetic: list[float] = field(default_factory=lambda: [1.0])  # all real + k x synthetic
    train_size: int | None = None  # fixed training-set size of the fraction arms; None: the smaller set
    test_size: int | None = None  # cap per test domain (stratified); None: the whole test split
    # One more run on this many real training images alone (more than the synthetic set has), with the budget
    # of its own size: what the real data gives when there is more of it. None: no such run.
    real_baseline: int | None = None
    # The data audit before training (synthgap.audit): drop removes test images with a twin in a training
    # split and second copies inside a training split; warn only reports them; off skips the audit.
    dedupe: str = "drop"
    # The budget floor of every run: at least this many optimisation steps (of train.batch_size), so a small
    # training set is not starved to a handful of steps (ending at chance). The headline study's runs are far
    # above it.
    min_steps: int = 200
    # The real-data scarcity curve: runs on k real images per class ('all': the whole real training split),
    # each alone and with the synthetic set added, and one run on the synthetic set alone; each run's budget is
    # fitted to its own data (train.epochs over its images, at least min_steps). Empty: no curve.
    real_per_class: list[int | str] = field(default_factory=list)
    # Synthetic images per class in the curve's runs (alone and added to the real ones); None: the whole
    # synthetic training split.
    curve_synthetic_per_class: int | None = None
    # The share of every batch of a curve run with real and synthetic images (real + synthetic, filter) that is
    # real images, drawn with replacement; null: as many as the run holds (50 real per class among 29k synthetic
    # images: 1%, each real image seen 5 times in 5 epochs). The budget is unchanged.
    curve_real_share: float | None = None
    # Gap-closing arms, each a row of the report: finetune (the synthetic-only model fine-tuned on k real images
    # per class: needs real labels), adabn (its BatchNorm statistics re-estimated on k unlabelled real images per
    # class: transductive, needs unlabelled target images), augment (synthetic-only training with strong
    # augmentation: needs nothing), filter (k real + the synthetic images a classifier trained on the k real ones
    # is most confident in: needs real labels), selftrain (self-training: the augment arm's model, else the
    # synthetic-only one, labels the real training images, their labels unused; the student trains on the
    # synthetic set and the most confident of them, then teaches the next round: needs unlabelled real images,
    # transductive).
    gap_closing: list[str] = field(default_factory=list)
    gap_sizes: list[int] = field(default_factory=list)  # k (real per class) of the arms that use real images
    filter_keep: float = 0.5  # share of the synthetic set the filter arm keeps
    finetune_lr_scale: float = 0.1  # the fine-tuning arm's learning rate: train.lr x this
    selftrain_rounds: int = 3  # the selftrain arm's rounds (a student each, trained from scratch)
    selftrain_keep: float = 0.5  # ... the share of the real training images it keeps each round, most confident first
    # The augment arm's augmentation (instead of train.augment): geometry, colour, JPEG, resampling and blur.
    strong_augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            crop_pad=4, rotate=15, zoom=0.2, brightness=0.3, contrast=0.3, jpeg=0.3, downscale=0.2, blur=0.2
        )
    )
    train: TrainConfig = field(default_factory=TrainConfig)


# --quick: the study in minutes.
QUICK = {
    "seeds": [0, 1],
    "fractions": [0.0, 0.5, 1.0],
    "extra_synthetic": [1.0],
    "train_size": 3000,
    "test_size": 1200,
    "train": {"epochs": 8, "batch_size": 128},
}


@dataclass
class PhotoDetectorConfig:
    """The pipeline's optional photo-detector stage: a detector of photo-sized real against photo-sized
    synthetic images (specs as `synthgap detector train --real/--synthetic` takes them, `$SYNTHGAP_DATA`
    standing for the data root), trained into OUT/photo-detector, so `synthgap serve OUT` answers photos as
    well as thumbnails. No specs: no such stage."""

    real: list[str] = field(default_factory=list)
    synthetic: list[str] = field(default_factory=list)
    # Its own detector config, not the pipeline's classes and image_size: windows of the photos' own pixels
    # (input: crop), both sides' windows rescaled and re-encoded alike (the photo chain of DetectorConfig).
    config: DetectorConfig = field(default_factory=DetectorConfig)


@dataclass
class PipelineConfig:
    """The whole study in one file: real data -> generate -> transfer -> report."""

    out: str = "runs/pipeline"
    root: str | None = None  # data root for 'cifar10' (default: $SYNTHGAP_DATA, else the user cache)
    real: str = "cifar10"
    classes: list[str] = field(default_factory=lambda: list(ANIMALS))
    image_size: int = 32
    # Generate on Ray and run the transfer study's runs as Ray tasks (synthgap.cluster): on the cluster at
    # ray_address ('auto': the running one), else the one $RAY_ADDRESS names, else a local Ray; each run gets
    # ray_cpus CPUs and ray_gpus GPUs. OUT must then lie on storage every node sees.
    ray: bool = False
    ray_address: str | None = None
    ray_cpus: float = 1
    ray_gpus: float = 0
    generator: str = "diffusers"  # diffusers: generate.model | builtin: train synthgap's own generator first
    builtin: GeneratorConfig = field(default_factory=GeneratorConfig)  # used with generator: builtin
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # The detector stage: the real images against the generated ones, so the folder serves whole (synthgap serve OUT).
    # Both sides re-encoded alike by default: the generated PNGs against e.g. CIFAR-10's JPEGs would otherwise
    # hand the detector a format shortcut (its format-bias audit says so).
    detect: bool = True
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(normalize_format=True))
    # Optional: a second detector, of photo-sized images (see PhotoDetectorConfig); skipped without its specs.
    photo_detector: PhotoDetectorConfig = field(default_factory=PhotoDetectorConfig)
