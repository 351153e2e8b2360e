"""The configs of generation: a set made with a diffusers model (synthgap generate) and synthgap's own
generator (synthgap generator train)."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthgap import ANIMALS
from synthgap.provenance.mark import SignConfig
from synthgap.runs import RUNTIME


@dataclass
class GenerateConfig:
    """`synthgap generate`. Fields marked RUNTIME may change between runs in one folder: more classes or
    images per class add images; the device and batch size do not change them (each line records its device)."""

    model: str = "stabilityai/sd-turbo"  # a diffusers text-to-image id or a local save_pretrained folder
    revision: str | None = None
    classes: list[str] = field(default_factory=lambda: list(ANIMALS), metadata=RUNTIME)
    per_class: int = field(default=100, metadata=RUNTIME)
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
    batch_size: int = field(default=8, metadata=RUNTIME)
    device: str = field(default="auto", metadata=RUNTIME)
    attention_slicing: bool = field(default=False, metadata=RUNTIME)
    vae_tiling: bool = field(default=False, metadata=RUNTIME)


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
    # RUNTIME fields do not change what a training step computes: a run may resume with other values.
    steps: int | None = field(default=None, metadata=RUNTIME)  # optimisation steps
    # Minutes of training (over all resumes) that shape the run: the LR cooldown starts by the clock too, so
    # what the run computes depends on the machine's speed. 0: none; the run is `steps` long.
    time_budget: float = field(default=0.0, metadata=RUNTIME)
    # Minutes of this invocation after which training stops and saves whatever `steps` says: a safety cap
    # only. Unlike time_budget it shapes nothing, so a run that ends by `steps` is the same on every machine;
    # a run it stops is marked cut short (log, training.json, report), and resuming continues it. 0: no cap.
    time_limit: float = field(default=0.0, metadata=RUNTIME)
    batch_size: int | None = None
    lr: float | None = None
    warmup: int = 200  # linear LR warm-up steps, then constant
    cooldown: float = 0.2  # share of the run (steps or time budget) over which the LR falls linearly to 0; 0: none
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # the EMA's ceiling; it warms up from 0 (diffusers EMAModel, power 3/4)
    label_dropout: float = 0.1  # share of labels replaced by the null class: classifier-free guidance
    snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (0: plain MSE)
    beta_schedule: str = "squaredcos_cap_v2"  # linear | scaled_linear | squaredcos_cap_v2
    # What the UNet predicts: epsilon (the noise) | v_prediction (Salimans & Ho 2022: alpha * noise - sigma * x0,
    # well-scaled at every noise level, so the image estimate at high noise does not blow up)
    prediction: str = "epsilon"
    train_timesteps: int = 1000
    # The first share of the run (of `steps`, or of the time budget) trains on the images at half resolution,
    # then the rest at full: a low-resolution step takes about half the time (1.8x the steps on 2 CPU cores).
    # 0: full resolution throughout.
    low_res: float = 0.0
    flip: bool = True  # random horizontal flips of the real images
    sampler: str = field(
        default="dpm", metadata=RUNTIME
    )  # dpm (DPM-Solver++ multistep) | ddim: the scheduler saved with the model
    sample_steps: int = field(default=20, metadata=RUNTIME)  # default sampling steps of the saved model
    # default classifier-free guidance of the saved model (1: none); 4 had the best CAS (benchmark)
    guidance_scale: float = field(default=4.0, metadata=RUNTIME)
    sample_every: int | None = field(default=None, metadata=RUNTIME)  # steps between per-class sample grids (0: never)
    checkpoint_every: int | None = field(default=None, metadata=RUNTIME)  # steps between checkpoints
    # steps at which the model is also saved whole, in GEN_DIR/snapshots/step_N
    snapshots: list[int] = field(default_factory=list, metadata=RUNTIME)
    grid_per_class: int = field(default=8, metadata=RUNTIME)
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16); the CPU trains in fp32
    device: str = field(default="auto", metadata=RUNTIME)
    threads: int = field(default=0, metadata=RUNTIME)
    seed: int = 0
