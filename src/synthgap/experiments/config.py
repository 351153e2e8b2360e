"""The configs of the study: the transfer study (synthgap transfer) and the whole pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap import ANIMALS
from synthgap.detect.config import DetectorConfig
from synthgap.generate.config import GenerateConfig, GeneratorConfig
from synthgap.train.config import TrainConfig


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
    ray: bool = False  # generate on Ray
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
