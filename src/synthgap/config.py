"""Typed configs: YAML files and ``key.sub=value`` overrides map onto dataclasses, and unknown
keys or wrong types are clear errors naming the field."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthgap import ANIMALS, SynthgapError
from synthgap.provenance.mark import SignConfig


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
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # CPU threads; 0: all cores
    seed: int = 0


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


@dataclass
class GenerateConfig:
    model: str = "stabilityai/sd-turbo"  # a diffusers text-to-image id or a local save_pretrained folder
    revision: str | None = None
    classes: list[str] = field(default_factory=lambda: list(ANIMALS))
    per_class: int = 100
    seed: int = 0
    size: int = 32  # saved image size (square), the shared antialiased resampler
    image_format: str = "png"  # png (lossless) | jpeg: e.g. to store a set like the real one it is compared with
    jpeg_quality: int = 75  # with image_format: jpeg (the shared CIFAR-10 and CIFAKE copies are q75)
    native: bool = False  # also keep the image at the size the model made it
    resolution: int | None = None  # generation height/width; None: the model's default
    steps: int | None = None  # None: by model family (templates.yaml 'families')
    guidance_scale: float | None = None
    negative_prompt: str | None = None  # None: the templates' negative prompt
    templates: str | None = None  # YAML file of prompt templates; None: the packaged one
    max_retries: int = 3  # new seeds tried for an image the safety checker blanked
    dtype: str = "auto"  # auto (fp16 on CUDA, else fp32) | float32 | float16 | bfloat16
    # A signed C2PA manifest in every image (cert_chain + key, PEM). Every image carries the unsigned
    # AI-generated mark (XMP digital source type) either way.
    sign: SignConfig = field(default_factory=SignConfig)
    # Runtime knobs: a run may resume with other values (each manifest line records its device).
    batch_size: int = 8
    device: str = "auto"
    attention_slicing: bool = False
    vae_tiling: bool = False


GENERATE_RUNTIME_FIELDS = ("per_class", "classes", "batch_size", "device", "attention_slicing", "vae_tiling")


@dataclass
class GeneratorConfig:
    """synthgap's own class-conditional diffusion generator (`synthgap generator train`).

    Fields left null take the preset's value (see synthgap.generate.builtin.PRESETS).
    """

    preset: str = "small"  # tiny (tests) | small (a CPU, under an hour) | base (a GPU)
    classes: list[str] = field(default_factory=lambda: list(ANIMALS))
    image_size: int | None = None  # square training and sampling size
    patch_size: int | None = None  # pixel-unshuffle factor: the UNet runs at image_size / patch_size
    channels: list[int] | None = None  # UNet block widths, one per resolution level
    layers_per_block: int | None = None
    attention: bool | None = None  # self-attention at the lowest resolution
    steps: int | None = None  # optimisation steps
    time_budget: float = 0.0  # minutes of training (over all resumes); stop and save when reached; 0: no limit
    batch_size: int | None = None
    lr: float | None = None
    warmup: int = 200  # linear LR warm-up steps, then constant
    cooldown: float = 0.2  # share of the run (steps or time budget) over which the LR falls linearly to 0; 0: none
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # the EMA's ceiling; it warms up from 0 (diffusers EMAModel, power 3/4)
    label_dropout: float = 0.1  # share of labels replaced by the null class: classifier-free guidance
    snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (0: plain MSE)
    beta_schedule: str = "squaredcos_cap_v2"  # linear | scaled_linear | squaredcos_cap_v2
    train_timesteps: int = 1000
    flip: bool = True  # random horizontal flips of the real images
    sampler: str = "dpm"  # dpm (DPM-Solver++ multistep) | ddim: the scheduler saved with the model
    sample_steps: int = 20  # default sampling steps of the saved model
    guidance_scale: float = 4.0  # default classifier-free guidance of the saved model (1: none); 4 had the best CAS (benchmark)
    sample_every: int | None = None  # steps between per-class sample grids (0: never)
    checkpoint_every: int | None = None  # steps between checkpoints
    snapshots: list[int] = field(default_factory=list)  # steps at which the model is also saved whole, in GEN_DIR/snapshots/step_N
    grid_per_class: int = 8
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16); the CPU trains in fp32
    device: str = "auto"
    threads: int = 0
    seed: int = 0


# Fields that do not change what a training step computes: a run may resume with other values.
GENERATOR_RUNTIME_FIELDS = ("steps", "time_budget", "sampler", "sample_steps", "guidance_scale", "sample_every",
                            "checkpoint_every", "snapshots", "grid_per_class", "device", "threads")


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
    detector: "DetectorConfig" = field(default_factory=lambda: DetectorConfig(normalize_format=True))


def _head_stage() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=256, optimizer="adamw", lr=2e-3, weight_decay=1e-4, schedule="cosine",
                       warmup=0.05, label_smoothing=0.0, tta=False, augment=AugmentConfig(crop_pad=0, flip=False))


def _finetune_stage() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=128, optimizer="adamw", lr=3e-4, weight_decay=1e-4, schedule="cosine",
                       warmup=0.1, label_smoothing=0.0, tta=True,
                       augment=AugmentConfig(crop_pad=0, flip=True, jpeg=0.2, downscale=0.1, blur=0.1))


def _scratch_stage() -> TrainConfig:
    return TrainConfig(epochs=10, label_smoothing=0.0, tta=True,
                       augment=AugmentConfig(crop_pad=2, flip=True, jpeg=0.2, downscale=0.1, blur=0.1))


@dataclass
class DetectorConfig:
    """Real-vs-synthetic detector: a backbone, the shared head, and up to two training stages.

    Stage configs are TrainConfigs; their `model` field is unused (the backbone decides).
    A pretrained backbone trains `head` (backbone frozen) then `finetune` (top blocks unfrozen);
    a backbone without weights (airnet, or --no-pretrained) trains end to end with `scratch`.
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    backbone_model: str | None = None  # hub backbones (clip_vit_l14, dinov2_base): another model id or a local folder
    backbone_revision: str | None = None  # ... and its hub revision (a commit or tag), recorded in the bundle
    input_size: int | None = None  # backbone input resolution; None: the backbone's CPU default
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
    dedupe: str = "drop"  # drop | warn | off: the data audit before training, as in TransferConfig
    seed: int = 0
    head: TrainConfig = field(default_factory=_head_stage)
    finetune: TrainConfig = field(default_factory=_finetune_stage)
    scratch: TrainConfig = field(default_factory=_scratch_stage)


QUICK = {
    "seeds": [0, 1],
    "fractions": [0.0, 0.5, 1.0],
    "extra_synthetic": [1.0],
    "train_size": 3000,
    "test_size": 1200,
    "train": {"epochs": 8, "batch_size": 128},
}


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SynthgapError(f"config field '{where}': expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SynthgapError(f"config field '{where}': expected a list, got {value!r}")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, bool):
            return value
        raise SynthgapError(f"config field '{where}': expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise SynthgapError(f"config field '{where}': expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise SynthgapError(f"config field '{where}': expected {tp.__name__}, got {value!r}") from None
        if tp is int and float(value) != out:
            raise SynthgapError(f"config field '{where}': expected a whole number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise SynthgapError(f"config field '{where}': expected text, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise SynthgapError(
            f"unknown config field(s) {', '.join(prefix + u for u in unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """``train.epochs=5`` -> {"train": {"epochs": 5}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise SynthgapError(f"override '{text}': expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise SynthgapError(f"override '{text}': the value is not valid YAML ({e.problem if hasattr(e, 'problem') else e}); "
                            "quote it, e.g. KEY='\"a: b\"'") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                presets: list[dict] | tuple[dict, ...] = (), flags: dict | None = None) -> Any:
    """Defaults <- presets <- YAML file <- overrides <- flags (CLI options, taken as they are), validated into `cls`."""
    # Start from the full defaults, so a partial nested section (e.g. `head: {epochs: 6}`) keeps
    # its parent's defaults for that section rather than the nested class's own.
    data: dict = to_dict(cls())
    for p in presets:
        data = merge(data, p)
    if path:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise SynthgapError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise SynthgapError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise SynthgapError(f"{path}: expected a mapping of config fields at the top level")
        data = merge(data, loaded)
    for o in overrides:
        data = merge(data, parse_override(o))
    data = merge(data, {k: v for k, v in (flags or {}).items() if v is not None})
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
