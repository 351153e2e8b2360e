"""The training loop's config: one classifier trained on one set (synthgap train, each transfer run, a
detector's stages)."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap.runs import RUNTIME


@dataclass
class AugmentConfig:
    crop_pad: int = 2  # random crop after reflect-padding by this many pixels (0: off)
    flip: bool = True
    rotate: float = 0.0  # max degrees
    zoom: float = 0.0  # max relative scale change, e.g. 0.1 -> [0.9, 1.1]
    brightness: float = 0.0  # max relative change
    contrast: float = 0.0
    # Robustness augmentations (the detector's): the probability that an image is re-encoded as
    # JPEG, downscaled and upscaled back, or blurred, with a strength drawn from the range.
    jpeg: float = 0.0
    jpeg_quality: list[int] = field(default_factory=lambda: [40, 95])
    downscale: float = 0.0
    downscale_range: list[float] = field(default_factory=lambda: [0.5, 0.9])
    blur: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.2])


@dataclass
class TrainConfig:
    model: str = "airnet"
    widths: list[int] | None = None  # AirNet block widths; None: the model's default
    epochs: int = 16
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine
    warmup: float = 0.2  # fraction of steps spent warming up
    label_smoothing: float = 0.2
    val_fraction: float = 0.1  # held out of the training set for model selection
    patience: int = 0  # epochs without validation gain before stopping (0: never stop early)
    tta: bool = True  # average predictions over the image and its mirror at evaluation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = field(default="auto", metadata=RUNTIME)  # auto | cpu | cuda | mps
    threads: int = field(default=0, metadata=RUNTIME)  # CPU threads; 0: all cores
    seed: int = 0
