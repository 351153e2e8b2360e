"""synthgap's own generator: a class-conditional diffusion model trained on the real set.

Built from diffusers parts: a ``UNet2DModel`` with class embeddings (one extra "null" class for
classifier-free guidance, trained by label dropout), ``DDPMScheduler`` noise for training,
DPM-Solver++ (or DDIM) for sampling, ``EMAModel`` weights. The trained model is a diffusers
pipeline, ``ClassConditionalPipeline``, saved with ``save_pretrained``; ``synthgap generate
--model GEN_DIR`` samples a labelled set from it like from any text-to-image model.

On a CPU the UNet runs on pixel-unshuffled images (``patch_size`` 2: a 32x32x3 image is a
16x16x12 tensor). The diffusion is the same (noise is per pixel either way), the network costs a
quarter: that is what lets the ``small`` preset learn the six animal classes in an hour on two cores.

Layout of GEN_DIR:

    model_index.json, unet/, scheduler/   the pipeline (EMA weights), written last, atomically
    checkpoint.pt                         everything to --resume (weights, EMA, optimiser, RNG, losses)
    samples/step_XXXXXX.png               per-class sample grids during training (rows: classes)
    samples/final.png                     the same seeds from the saved model
    training.yaml                         resolved config, data hash, environment
    training.json, loss.csv, loss.png     figures of the run
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

from synthgap import SynthgapError
from synthgap.artifacts import KINDS, read_meta
from synthgap.config import from_dict, to_dict
from synthgap.generate.config import GeneratorConfig
from synthgap.io import environment, save_torch, write_json, write_text
from synthgap.runs import RunDir, check_resume, recorded_identity
from synthgap.runs import identity as run_identity

log = logging.getLogger("synthgap")
PIPELINE_CLASS = KINDS["generator"].legacy_class  # ClassConditionalPipeline: what model_index.json names
CHECKPOINT = "checkpoint.pt"

PRESETS: dict[str, dict] = {
    # A few thousand parameters: tests and demos (seconds).
    "tiny": dict(
        image_size=16,
        patch_size=2,
        channels=[8, 16],
        layers_per_block=1,
        attention=False,
        steps=200,
        batch_size=32,
        lr=2e-3,
        sample_every=0,
        checkpoint_every=50,
    ),
    # 2.7M parameters at 16x16x12: ~600 steps of 32 a minute on 2 CPU cores. Batches of 32 since 2026-12-05:
    # at equal CPU time more, smaller steps won at every budget measured (docs/benchmarks.md#builtin-generator;
    # 40 min of 32 beat 60 min of 128). A folder trained before with 128 resumes with --set batch_size=128.
    "small": dict(
        image_size=32,
        patch_size=2,
        channels=[32, 64, 128],
        layers_per_block=1,
        attention=True,
        steps=100_000,
        batch_size=32,
        lr=1e-3,
        sample_every=500,
        checkpoint_every=250,
    ),
    # DDPM's CIFAR-10 scale (35M parameters, full resolution): for a GPU.
    "base": dict(
        image_size=32,
        patch_size=1,
        channels=[128, 256, 256, 256],
        layers_per_block=2,
        attention=True,
        steps=200_000,
        batch_size=128,
        lr=2e-4,
        sample_every=5000,
        checkpoint_every=2500,
    ),
}
SAMPLERS = {"dpm": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}
PREDICTIONS = ("epsilon", "v_prediction", "edm")
# EDM (Karras et al. 2022): the data's standard deviation, the log-normal noise levels of training and the
# sampler's range of noise levels (their CIFAR-10 values; images in [-1, 1]).
EDM_SIGMA_DATA, EDM_P_MEAN, EDM_P_STD, EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.5, -1.2, 1.2, 0.002, 80.0
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


# ---------------------------------------------------------------- config


def resolve_generator_config(cfg: GeneratorConfig) -> GeneratorConfig:
    """Fill the preset's values into the fields left null, then check everything."""
    from synthgap.data.sets import parse_classes

    if cfg.preset not in PRESETS:
        raise SynthgapError(f"config field 'preset': unknown '{cfg.preset}' (known: {', '.join(PRESETS)})")
    preset = PRESETS[cfg.preset]
    filled = {k: (preset[k] if v is None and k in preset else v) for k, v in to_dict(cfg).items()}
    if not filled["classes"]:
        raise SynthgapError("config field 'classes': give at least one class (e.g. bird,cat,deer)")
    filled["classes"] = parse_classes(filled["classes"])
    cfg = from_dict(GeneratorConfig, filled)
    check_generator_config(cfg)
    return cfg


def check_generator_config(cfg: GeneratorConfig) -> None:
    levels = len(cfg.channels or [])
    problems = [
        ("channels", levels < 1 or any(c < 1 for c in cfg.channels), "a list of positive widths, one per level"),
        ("image_size", cfg.image_size < 4, "at least 4"),
        ("patch_size", cfg.patch_size < 1, "at least 1"),
        ("layers_per_block", cfg.layers_per_block < 1, "at least 1"),
        ("steps", cfg.steps < 1, "at least 1"),
        ("batch_size", cfg.batch_size < 1, "at least 1"),
        ("lr", not cfg.lr > 0, "a positive learning rate"),
        ("time_budget", cfg.time_budget < 0, "minutes >= 0 (0: no limit)"),
        ("time_limit", cfg.time_limit < 0, "minutes >= 0 (0: no cap)"),
        ("prediction", cfg.prediction not in PREDICTIONS, f"one of {', '.join(PREDICTIONS)}"),
        ("warmup", cfg.warmup < 0, "steps >= 0"),
        ("cooldown", not 0 <= cfg.cooldown <= 1, "a share of the run between 0 and 1 (0: constant LR)"),
        ("low_res", not 0 <= cfg.low_res < 1, "a share of the run in [0, 1) (0: full resolution throughout)"),
        ("ema_decay", not 0 <= cfg.ema_decay < 1, "between 0 and 1 (exclusive)"),
        ("label_dropout", not 0 <= cfg.label_dropout < 1, "between 0 and 1 (0: no classifier-free guidance)"),
        ("snr_gamma", cfg.snr_gamma < 0, ">= 0 (0: plain MSE)"),
        ("beta_schedule", cfg.beta_schedule not in BETA_SCHEDULES, f"one of {', '.join(BETA_SCHEDULES)}"),
        ("train_timesteps", cfg.train_timesteps < 2, "at least 2"),
        ("sampler", cfg.sampler not in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        (
            "sample_steps",
            not 1 <= cfg.sample_steps <= cfg.train_timesteps,
            f"between 1 and train_timesteps ({cfg.train_timesteps})",
        ),
        ("guidance_scale", cfg.guidance_scale < 0, ">= 0"),
        ("sample_every", cfg.sample_every < 0, ">= 0 (0: never)"),
        ("checkpoint_every", cfg.checkpoint_every < 1, "at least 1"),
        ("grid_per_class", cfg.grid_per_class < 1, "at least 1"),
        ("snapshots", any(k < 1 for k in cfg.snapshots), "a list of steps >= 1"),
    ]
    for name, bad, want in problems:
        if bad:
            raise SynthgapError(f"config field '{name}': expected {want}, got {getattr(cfg, name)!r}")
    factor = cfg.patch_size * 2 ** (levels - 1) * (2 if cfg.low_res else 1)
    if cfg.image_size % factor:
        raise SynthgapError(
            f"config field 'image_size': {cfg.image_size} is not divisible by {factor}, the UNet's down-sampling "
            f"(patch_size {cfg.patch_size} x 2^{levels - 1} for {levels} levels of channels"
            f"{', x 2 for low_res' if cfg.low_res else ''}); use e.g. "
            f"{max(factor, cfg.image_size // factor * factor)}"
        )
    groups = norm_groups(cfg.channels)
    if any(c % groups for c in cfg.channels):
        raise SynthgapError(
            f"config field 'channels': every width must be a multiple of {groups} "
            f"(the GroupNorm groups, a quarter of the first width), got {cfg.channels}"
        )


def norm_groups(channels: list[int]) -> int:
    return max(1, min(32, channels[0] // 4))


def identity(cfg: GeneratorConfig) -> dict:
    """What a training step computes (synthgap.runs.identity): a checkpoint only resumes under the same identity."""
    return run_identity(cfg)


# ---------------------------------------------------------------- the model


def build_unet(cfg: GeneratorConfig) -> UNet2DModel:
    levels = len(cfg.channels)
    attn = [cfg.attention and i == levels - 1 for i in range(levels)]
    channels = 3 * cfg.patch_size**2
    return UNet2DModel(
        sample_size=cfg.image_size // cfg.patch_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        num_class_embeds=len(cfg.classes) + 1,  # the last one is "no class": classifier-free guidance
        norm_num_groups=norm_groups(cfg.channels),
        attention_head_dim=min(32, cfg.channels[-1]),
    )


def training_scheduler(cfg: GeneratorConfig) -> DDPMScheduler:
    """The DDPM noise of epsilon and v training (EDM draws its own noise levels; this then only serves the
    schedule's SNR)."""
    return DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon" if cfg.prediction == "edm" else cfg.prediction,
        clip_sample=False,
    )


def sampling_scheduler(cfg: GeneratorConfig):
    """The training noise schedule with a fast sampler, set up for a model in pixel space.

    The cosine schedule ends at alpha_bar ~ 1e-9: at t = 999 the image estimate is the noise
    estimate times ~10^4, and samplers blow up. So sampling starts at the last of evenly spaced
    steps below it ("leading" spacing, 950 for 20 steps), and each step's image estimate is kept in
    [-1, 1] (DDIM's clipping; DPM-Solver++'s dynamic thresholding, as recommended for pixel space).
    """
    if cfg.prediction == "edm":  # EDM's preconditioning lives in these schedulers (c_in, c_noise, c_skip, c_out)
        edm = dict(sigma_min=EDM_SIGMA_MIN, sigma_max=EDM_SIGMA_MAX, sigma_data=EDM_SIGMA_DATA)
        if cfg.sampler == "dpm":
            return EDMDPMSolverMultistepScheduler(**edm, algorithm_type="dpmsolver++", solver_order=2)
        return EDMEulerScheduler(**edm)
    train = training_scheduler(cfg)
    if cfg.sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(
            train.config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="leading",
            thresholding=True,
            sample_max_value=1.0,
        )
    return DDIMScheduler.from_config(train.config, timestep_spacing="leading", clip_sample=True, clip_sample_range=1.0)


class ClassConditionalPipeline(DiffusionPipeline):
    """Sample images of given classes from a class-conditional ``UNet2DModel``.

    ``pipe(["cat", "dog"], generator=[g1, g2])`` makes one image per label, each from its own
    generator's noise, so an image does not depend on the batch it is made in. ``kind`` and
    ``format_version`` are not settings: model_index.json records them (synthgap.artifacts), and a
    pipeline saved from this one records the current format.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DPMSolverMultistepScheduler,
        class_names: list[str] | None = None,
        patch_size: int = 1,
        default_steps: int = 20,
        default_guidance_scale: float = 4.0,
        kind: str | None = None,
        format_version: int | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            class_names=list(class_names or []),
            patch_size=int(patch_size),
            default_steps=int(default_steps),
            default_guidance_scale=float(default_guidance_scale),
            **KINDS["generator"].stamp(),
        )

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.config.patch_size

    def label_ids(self, class_labels) -> torch.Tensor:
        names = list(self.config.class_names)
        ids = []
        for c in class_labels:
            if isinstance(c, str):
                if c not in names:
                    raise SynthgapError(f"class '{c}' is not one this generator was trained on ({', '.join(names)})")
                ids.append(names.index(c))
            else:
                if not 0 <= int(c) < len(names):
                    raise SynthgapError(f"class index {c} out of range 0..{len(names) - 1}")
                ids.append(int(c))
        return torch.tensor(ids, dtype=torch.long)

    @torch.no_grad()
    def __call__(
        self,
        class_labels,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        steps = num_inference_steps or self.config.default_steps
        scale = self.config.default_guidance_scale if guidance_scale is None else guidance_scale
        device = self._execution_device
        labels = self.label_ids(class_labels).to(device)
        null = torch.full_like(labels, len(self.config.class_names))
        p, size = self.config.patch_size, self.image_size
        # Noise in image space, one generator per image, then into the UNet's (unshuffled) layout.
        x = randn_tensor((len(labels), 3, size, size), generator=generator, device=device, dtype=self.unet.dtype)
        x = F.pixel_unshuffle(x, p) if p > 1 else x
        self.scheduler.set_timesteps(steps, device=device)
        x = x * self.scheduler.init_noise_sigma  # 1 for DDPM-family schedulers; EDM starts at sigma_max
        guided = scale != 1.0
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            eps = self.unet(model_in, t, class_labels=torch.cat([labels, null]) if guided else labels).sample
            if guided:
                cond, uncond = eps.chunk(2)
                eps = uncond + scale * (cond - uncond)
            x = self.scheduler.step(eps, t, x).prev_sample
        x = F.pixel_shuffle(x, p) if p > 1 else x
        images = (x.float() / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def builtin_info(model: str | Path) -> dict | None:
    """model_index.json of a saved ClassConditionalPipeline folder, else None (see synthgap.artifacts.read_meta)."""
    return read_meta(model, "generator")


def load_generator(model: str | Path, device: str = "auto") -> ClassConditionalPipeline:
    from synthgap.device import select_device

    if builtin_info(model) is None:
        raise SynthgapError(
            f"{model}: not a synthgap generator (no model_index.json naming {PIPELINE_CLASS}); "
            "train one with `synthgap generator train`"
        )
    # A few MB: plain loading (low_cpu_mem_usage needs `accelerate`, and warns without it).
    pipe = ClassConditionalPipeline.from_pretrained(str(Path(model).expanduser()), low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(select_device(device))


# ---------------------------------------------------------------- training


def class_grid(
    pipe: ClassConditionalPipeline,
    per_class: int,
    seed: int,
    path: Path,
    steps: int | None = None,
    guidance_scale: float | None = None,
) -> Path:
    """One row per class, the same seeds every time (so grids of successive steps can be compared)."""
    from synthgap.report.plots import save_image_grid

    classes = list(pipe.config.class_names)
    labels = [c for c in classes for _ in range(per_class)]
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(len(labels))]
    images = pipe(
        labels, num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens, output_type="pt"
    ).images
    save_image_grid(images, path, nrow=per_class)
    return path


@dataclasses.dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0  # training time over all resumes
    cooldown_from: int | None = None  # first step of the LR cooldown
    losses: list[float] = dataclasses.field(default_factory=list)


def lr_factor(cfg: GeneratorConfig, step: int, seconds: float) -> float:
    """The learning rate's share at `step` (0-based): linear warm-up, constant, then a linear cooldown to 0.

    The cooldown fills the last `cooldown` share of the run, whose end is `steps` or the time budget,
    whichever comes first. Annealing the LR lets a short run settle into the minimum it was circling,
    which constant LR + EMA alone does not. With a budget the cooldown starts when its seconds say so:
    where depends on the machine's speed (a run by `steps` alone is bit-reproducible). Extending a
    finished run (more steps or minutes) raises the LR again: set cooldown 0 for runs meant to grow.
    """
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    if not cfg.cooldown:
        return warm
    return max(0.0, min(warm, (1 - run_progress(cfg, step, seconds)) / cfg.cooldown))


def run_progress(cfg: GeneratorConfig, step: int, seconds: float) -> float:
    """How far the run is, 0 to 1: by its steps, or by its time budget if that ends it first."""
    progress = step / cfg.steps
    if cfg.time_budget:
        progress = max(progress, seconds / (cfg.time_budget * 60))
    return progress


class GeneratorTrainer:
    """One object per training run of the builtin generator; owns GEN_DIR."""

    def __init__(self, cfg: GeneratorConfig, out: str | Path):
        from diffusers.training_utils import EMAModel

        from synthgap.device import mixed_precision, select_device, set_threads

        self.cfg = resolve_generator_config(cfg)
        self.out = Path(out)
        self.device = select_device(self.cfg.device)
        set_threads(self.cfg.threads)
        torch.manual_seed(self.cfg.seed)
        self.unet = build_unet(self.cfg).to(self.device)
        self.noise = training_scheduler(self.cfg)
        self.ema = EMAModel(self.unet.parameters(), decay=self.cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        # One generator drives every random draw of training (batches, flips, label dropout, timesteps,
        # noise): saved in the checkpoint, it makes a resumed run continue the very same loss curve.
        self.rng = torch.Generator().manual_seed(self.cfg.seed)
        self.state = TrainState()
        self.data_record: dict = {}  # the training data's describe(), once claimed
        alphas = self.noise.alphas_cumprod
        self.snr = (alphas / (1 - alphas)).to(self.device)
        self.amp, self.scaler = mixed_precision(self.device, self.cfg.amp)

    # ------------------------------------------------------------ one step

    def loss(self, images: torch.Tensor, labels: torch.Tensor, low_res: bool = False) -> torch.Tensor:
        """Diffusion loss of a batch of uint8 images: epsilon (or v) MSE at random timesteps, min-SNR weighted.
        `low_res`: on the images at half resolution (the same noise schedule; the UNet is convolutional)."""
        cfg, n = self.cfg, len(labels)
        x0 = images.float().div(127.5).sub(1)
        if low_res:
            x0 = F.avg_pool2d(x0, 2)
        if cfg.flip:
            flip = torch.rand(n, generator=self.rng) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        drop = torch.rand(n, generator=self.rng) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, len(cfg.classes)), labels)
        p = cfg.patch_size
        if cfg.prediction == "edm":
            return self.edm_loss(x0, labels)
        t = torch.randint(0, cfg.train_timesteps, (n,), generator=self.rng)
        noise = torch.randn(x0.shape, generator=self.rng)
        x0, noise, t, labels = (v.to(self.device) for v in (x0, noise, t, labels))
        xt = self.noise.add_noise(x0, noise, t)
        target = self.noise.get_velocity(x0, noise, t) if cfg.prediction == "v_prediction" else noise
        if p > 1:
            xt, target = F.pixel_unshuffle(xt, p), F.pixel_unshuffle(target, p)
        with self.amp():
            pred = self.unet(xt, t, class_labels=labels).sample
        per_image = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:  # min-SNR-gamma (Hang et al. 2023): less weight on the easy, low-noise steps
            snr = self.snr[t]  # (for v: the same weighting of the x0 error, min(snr, gamma) / (snr + 1))
            per_image = (
                per_image * torch.clamp(snr, max=cfg.snr_gamma) / (snr if cfg.prediction == "epsilon" else snr + 1)
            )
        return per_image.mean()

    def edm_loss(self, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """EDM's loss (Karras et al. 2022): log-normal noise levels, the UNet F inside D = c_skip x + c_out F,
        and its weighting, which makes the loss a plain MSE of F against its target."""
        n, p, sd = len(labels), self.cfg.patch_size, EDM_SIGMA_DATA
        sigma = (torch.randn(n, generator=self.rng) * EDM_P_STD + EDM_P_MEAN).exp()
        noise = torch.randn(x0.shape, generator=self.rng)
        x0, noise, sigma, labels = (v.to(self.device) for v in (x0, noise, sigma, labels))
        s = sigma.view(-1, 1, 1, 1)
        xt = x0 + s * noise
        c_in, c_skip = (s**2 + sd**2).rsqrt(), sd**2 / (s**2 + sd**2)
        c_out = s * sd * c_in
        model_in, target = c_in * xt, (x0 - c_skip * xt) / c_out
        if p > 1:
            model_in, target = F.pixel_unshuffle(model_in, p), F.pixel_unshuffle(target, p)
        with self.amp():
            pred = self.unet(model_in, 0.25 * sigma.log(), class_labels=labels).sample
        return (pred.float() - target).pow(2).mean()

    def step(self, data_images: torch.Tensor, data_labels: torch.Tensor) -> float:
        factor = lr_factor(self.cfg, self.state.step, self.state.seconds)
        if factor < 1 and self.state.step >= self.cfg.warmup and self.state.cooldown_from is None:
            self.state.cooldown_from = self.state.step
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * factor
        idx = torch.randint(0, len(data_labels), (self.cfg.batch_size,), generator=self.rng)
        low_res = run_progress(self.cfg, self.state.step, self.state.seconds) < self.cfg.low_res
        loss = self.loss(data_images[idx], data_labels[idx], low_res)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.ema.step(self.unet.parameters())
        self.state.step += 1
        value = float(loss.detach())
        self.state.losses.append(value)
        return value

    # ------------------------------------------------------------ state on disk

    def save_checkpoint(self) -> None:
        save_torch(
            self.out / CHECKPOINT,
            {
                "identity": identity(self.cfg),
                "unet": self.unet.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": self.rng.get_state(),
                "state": dataclasses.asdict(self.state),
            },
        )

    def load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        # older checkpoints recorded every field, or lack fields added since (they take their defaults)
        old = recorded_identity(GeneratorConfig, ckpt["identity"])
        check_resume(
            path,
            "a generator checkpoint",
            {"identity": old},
            {"identity": identity(self.cfg)},
            "resume with the same config, or choose another --out",
        )
        self.unet.load_state_dict(ckpt["unet"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.rng.set_state(ckpt["rng"])
        self.state = TrainState(**ckpt["state"])

    def pipeline(self) -> ClassConditionalPipeline:
        """The model as a pipeline: a copy of the UNet with the EMA weights (what gets sampled and saved)."""
        import copy

        unet = copy.deepcopy(self.unet)
        self.ema.copy_to(unet.parameters())
        unet.eval()
        pipe = ClassConditionalPipeline(
            unet,
            sampling_scheduler(self.cfg),
            self.cfg.classes,
            self.cfg.patch_size,
            self.cfg.sample_steps,
            self.cfg.guidance_scale,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def export(self, folder: Path | None = None) -> Path:
        """save_pretrained the EMA pipeline into `folder` (default GEN_DIR); model_index.json, the mark of a
        complete model, comes last."""
        folder = folder or self.out
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / ".export.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        self.pipeline().save_pretrained(staging)
        (folder / "model_index.json").unlink(missing_ok=True)
        for part in ("unet", "scheduler"):
            shutil.rmtree(folder / part, ignore_errors=True)
            (staging / part).rename(folder / part)
        (staging / "model_index.json").rename(folder / "model_index.json")
        shutil.rmtree(staging, ignore_errors=True)
        return folder

    def write_figures(self, data_describe: dict, stopped_by: str) -> None:
        from synthgap.report.plots import plot_loss_curve

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["step", "loss"])
        w.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(self.state.losses))
        write_text(self.out / "loss.csv", buf.getvalue())
        plot_loss_curve(self.state.losses, self.out / "loss.png", f"{self.cfg.preset} generator: training loss")
        write_json(
            self.out / "training.json",
            {
                "steps": self.state.step,
                "seconds": round(self.state.seconds, 1),
                "images_per_second": round(self.state.step * self.cfg.batch_size / max(self.state.seconds, 1e-9), 1),
                "final_loss_mean_last_100": (
                    sum(self.state.losses[-100:]) / len(self.state.losses[-100:]) if self.state.losses else None
                ),
                "cooldown_from_step": self.state.cooldown_from,
                # "steps" (the config's count: the same on every machine), "time_budget" (by design) or
                # "time_limit" (the safety cap fired: cut short)
                "stopped_by": stopped_by,
                "steps_asked": self.cfg.steps,
                "cut_short": stopped_by == "time_limit",
                "parameters": sum(p.numel() for p in self.unet.parameters()),
                "data": data_describe,
            },
        )

    # ------------------------------------------------------------ the run

    def run(self, real, *, root=None, resume: bool = False, progress: bool = True) -> Path:
        """Train (or resume) until `steps` or the time budget; save the pipeline; return GEN_DIR."""
        data = self.claim(real, root=root, resume=resume)
        if data is None:
            return self.out
        done_by = self.train_loop(data.images, data.labels, progress=progress)
        self.save_checkpoint()
        self.export()
        class_grid(self.pipeline(), self.cfg.grid_per_class, self.cfg.seed, self.out / "samples" / "final.png")
        self.write_figures(self.data_record, done_by)
        log.info(
            "generator saved: %s (%d steps, %.1f min, stopped by %s)",
            self.out,
            self.state.step,
            self.state.seconds / 60,
            done_by,
        )
        return self.out

    def claim(self, real, *, root=None, resume: bool = False):
        """Load the training data and claim GEN_DIR for this run (restoring its checkpoint on resume);
        None if a resumed run has nothing left to do."""
        from synthgap.data.sets import ImageSet, load_spec

        cfg, out = self.cfg, self.out
        data = (
            real if isinstance(real, ImageSet) else load_spec(real, "train", cfg.classes, cfg.image_size, root, "real")
        )
        if list(data.classes) != list(cfg.classes) or data.images.shape[-1] != cfg.image_size:
            raise SynthgapError(f"training data {data.name}: expected classes {cfg.classes} at {cfg.image_size} px")
        describe = self.data_record = data.describe()
        folder = RunDir(out, "training.yaml", "a generator training run")
        if (out / CHECKPOINT).exists() or builtin_info(out):
            if not resume:
                raise SynthgapError(
                    f"{out} already holds a generator training run; add --resume to continue it, "
                    "or choose another --out"
                )
            folder.claim(
                cfg,
                data={"sha256": describe["sha256"]},
                remedy="resume with the same config and data, or choose another --out",
            )
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / CHECKPOINT).exists():
            self.load_checkpoint()
            info = builtin_info(out)
            finished = self.state.step >= cfg.steps or (cfg.time_budget and self.state.seconds >= cfg.time_budget * 60)
            saved = info and (info["scheduler"][1], info["default_steps"], info["default_guidance_scale"])
            if finished and saved == (type(sampling_scheduler(cfg)).__name__, cfg.sample_steps, cfg.guidance_scale):
                log.info(
                    "%s: trained before (%d steps, %.1f min); nothing to do",
                    out,
                    self.state.step,
                    self.state.seconds / 60,
                )
                return None
            log.info("resuming %s at step %d (%.1f min trained)", out, self.state.step, self.state.seconds / 60)
        env = environment()
        import diffusers

        env["diffusers"] = diffusers.__version__
        folder.write(cfg, data=dict(describe), environment=env)
        return data

    def train_loop(self, images: torch.Tensor, labels: torch.Tensor, *, progress: bool = True) -> str:
        """Steps until `steps` or the time budget, with sample grids, snapshots and checkpoints on their
        schedules; returns what stopped it ("steps" or "time_budget"). Ctrl-C saves a checkpoint first."""
        from synthgap.io import progress_bar

        cfg, out = self.cfg, self.out
        budget = cfg.time_budget * 60
        # With a time budget the bar counts training seconds, so its ETA is the budget's, not that of `steps`.
        bar = (
            progress_bar(
                total=budget,
                initial=min(self.state.seconds, budget),
                unit="s",
                enabled=progress,
                desc=f"training {cfg.preset} generator",
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]",
            )
            if budget
            else progress_bar(
                total=cfg.steps,
                initial=self.state.step,
                desc=f"training {cfg.preset} generator",
                unit="step",
                enabled=progress,
            )
        )
        done_by = "steps"
        t_last, smooth, started = time.perf_counter(), None, self.state.seconds

        def show(loss):
            shown = {
                "loss": f"{loss:.4f}",
                "lr": f"{self.opt.param_groups[0]['lr']:.1e}",
                "img_s": f"{self.state.step * cfg.batch_size / self.state.seconds:.0f}",
            }
            bar.set_postfix({"step": self.state.step, **shown} if budget else shown, refresh=False)

        try:
            self.unet.train()
            while self.state.step < cfg.steps:
                if budget and self.state.seconds >= budget:
                    done_by = "time_budget"
                    break
                if cfg.time_limit and self.state.seconds - started >= cfg.time_limit * 60:
                    done_by = "time_limit"
                    log.warning(
                        "generator training cut short by its time limit (%g min) at step %d of %d: the model is "
                        "less trained than its config asks, and another machine would stop elsewhere; "
                        "run again with --resume (and a larger time_limit) to finish it",
                        cfg.time_limit,
                        self.state.step,
                        cfg.steps,
                    )
                    break
                value = self.step(images, labels)
                now = time.perf_counter()
                self.state.seconds += now - t_last
                t_last = now
                smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
                bar.update(min(self.state.seconds, budget) - bar.n if budget else 1)
                if self.state.step % 10 == 0:
                    show(smooth)
                if cfg.sample_every and self.state.step % cfg.sample_every == 0:
                    class_grid(
                        self.pipeline(),
                        cfg.grid_per_class,
                        cfg.seed,
                        out / "samples" / f"step_{self.state.step:06d}.png",
                    )
                    t_last = time.perf_counter()  # grids are not training time
                if self.state.step in cfg.snapshots:  # the model as it was then, e.g. a "short run" to compare with
                    self.export(out / "snapshots" / f"step_{self.state.step:06d}")
                    t_last = time.perf_counter()
                if self.state.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                    t_last = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            self.save_checkpoint()
            raise SynthgapError(
                f"interrupted at step {self.state.step}; checkpoint saved in {out / CHECKPOINT}: "
                "run the same command with --resume to continue"
            ) from None
        if smooth is not None:
            show(smooth)
        bar.close()
        return done_by


def train_generator(
    real, out: str | Path, cfg: GeneratorConfig | None = None, *, root=None, resume: bool = False, progress: bool = True
) -> Path:
    """Python API of `synthgap generator train`: REAL is a data spec (e.g. 'cifar10') or an ImageSet."""
    return GeneratorTrainer(cfg or GeneratorConfig(), out).run(real, root=root, resume=resume, progress=progress)


def saved_config(gen_dir: str | Path) -> GeneratorConfig:
    data = yaml.safe_load((Path(gen_dir) / "training.yaml").read_text())
    return from_dict(GeneratorConfig, data["config"])


__all__ = [
    "ClassConditionalPipeline",
    "GeneratorTrainer",
    "PRESETS",
    "build_unet",
    "builtin_info",
    "class_grid",
    "load_generator",
    "resolve_generator_config",
    "saved_config",
    "train_generator",
]
