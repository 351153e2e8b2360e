"""Generate a labelled synthetic image dataset with a diffusers text-to-image pipeline.

Layout of an output folder DIR:

    DIR/generation.yaml       resolved config, its hash, template hash, library versions
    DIR/manifest.jsonl        one line per finished image (path, class, prompt, seed, model, sha256, ...)
    DIR/<class>/<id>.png      the image at the target size; its metadata as JSON in the PNG text chunk `synthgap`
                              (or <id>.jpg with image_format: jpeg, the JSON in the JPEG's comment segment)
    DIR/native/<class>/<id>.png   at the model's own size (with native: true)

Every image is written atomically (temp file + rename) before its manifest line is appended
and flushed, so a kill at any moment leaves at worst an image without a line: resume makes
it again, bit for bit the same as before, because image i of class c depends only on
(run seed, class, i). With Ray (make_with_ray), the same work is sharded over pipeline actors.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from synthgap import SynthgapError, __version__
from synthgap.artifacts import read_meta
from synthgap.config import from_dict, to_dict
from synthgap.data.images import resize_square
from synthgap.data.sets import parse_classes
from synthgap.generate.config import GenerateConfig
from synthgap.generate.prompts import Templates, image_seed
from synthgap.io import environment, sha256_bytes, write_bytes, write_text
from synthgap.runs import RunDir
from synthgap.runs import identity as run_identity

log = logging.getLogger("synthgap")
MANIFEST = "manifest.jsonl"
CONFIG = "generation.yaml"
# The manifest is flushed after every batch but synced to disk at most this often: a sync per batch
# costs more than the saving itself on small batches, and resume checks every line against its
# file's hash anyway, so an unsynced line can only cost work, never correctness.
SYNC_SECONDS = 10.0
PNG_TEXT_KEY = "synthgap"  # the text chunk holding an image's generation record


def image_id(cls: str, index: int) -> str:
    return f"{cls}_{index:05d}"


@dataclass
class Job:
    cls: str
    index: int
    attempt: int = 0

    @property
    def id(self) -> str:
        return image_id(self.cls, self.index)


def identity(cfg: GenerateConfig, templates: Templates) -> dict:
    """What determines the pixels: a folder only accepts runs with the same identity."""
    from synthgap.io import sha256_file

    d = run_identity(cfg)
    if d["image_format"] == "png":  # the default: folders made before the field existed keep their identity
        del d["image_format"], d["jpeg_quality"]
    if not cfg.sign.enabled:  # likewise; signed and unsigned images are not mixed in one folder
        del d["sign"]
    d["templates_sha256"] = templates.sha256()
    if read_meta(cfg.model, "generator"):  # a generator retrained in the same folder is another model
        d["model_sha256"] = sha256_file(Path(cfg.model) / "unet" / "diffusion_pytorch_model.safetensors")
    return d


def resolve_settings(cfg: GenerateConfig, templates: Templates) -> GenerateConfig:
    """Fill steps/guidance/negative prompt from the model family and the templates
    (synthgap's own generators: from the model; they take a class, not a prompt)."""
    if info := read_meta(cfg.model, "generator"):
        fam = {"steps": info["default_steps"], "guidance_scale": info["default_guidance_scale"]}
        cfg = from_dict(GenerateConfig, {**to_dict(cfg), "negative_prompt": ""})
    else:
        fam = templates.family_settings(cfg.model)
    return from_dict(
        GenerateConfig,
        {
            **to_dict(cfg),
            "classes": parse_classes(cfg.classes),
            "steps": cfg.steps if cfg.steps is not None else int(fam.get("steps", 25)),
            "guidance_scale": cfg.guidance_scale
            if cfg.guidance_scale is not None
            else float(fam.get("guidance_scale", 7.5)),
            "negative_prompt": cfg.negative_prompt
            if cfg.negative_prompt is not None
            else templates.data["negative_prompt"],
        },
    )


def load_pipeline(model: str, revision: str | None = None, device: str = "auto", dtype: str = "auto"):
    """``AutoPipelineForText2Image.from_pretrained`` with a clear error when the model cannot be had."""
    import torch
    from diffusers import AutoPipelineForText2Image

    from synthgap.device import select_device
    from synthgap.io import watched

    dev = select_device(device)
    torch_dtype = {
        "auto": torch.float16 if dev.type == "cuda" else torch.float32,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }.get(dtype)
    if torch_dtype is None:
        raise SynthgapError(f"config field 'dtype': unknown '{dtype}' (auto, float32, float16 or bfloat16)")
    if not watched():  # the loading bars of diffusers and transformers, in a log file: one redraw per line
        import diffusers.utils.logging
        import transformers.utils.logging

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(model, revision=revision, dtype=torch_dtype)
    except Exception as e:  # offline, wrong id, gated repo, broken folder: one message, no traceback
        local = Path(model).expanduser()
        hint = (
            f"the folder {local} is not a diffusers pipeline saved with save_pretrained (no model_index.json?)"
            if local.exists()
            else "check the model id, network access and Hugging Face login, or pass a local folder made with "
            "save_pretrained; offline, a model already in the Hugging Face cache loads with HF_HUB_OFFLINE=1"
        )
        raise SynthgapError(
            f"could not load model '{model}': {type(e).__name__}: {str(e).splitlines()[0][:300]}\n{hint}"
        ) from None
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_kwargs(
    conditions: list[str],
    seeds: list[int],
    *,
    steps: int,
    guidance_scale: float,
    negative_prompt: str,
    device,
    class_conditional: bool = False,
    resolution: int | None = None,
) -> dict:
    """The arguments of one pipeline call making one image per condition (a prompt, or a class for
    synthgap's own generators), each from its own seeded generator, so an image does not depend on
    its batch. `synthgap generate` and the web app both call pipelines through this."""
    import torch

    gen_device = device if device.type == "cuda" else "cpu"
    kwargs = {
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "output_type": "pil",
        "generator": [torch.Generator(gen_device).manual_seed(seed) for seed in seeds],
    }
    if class_conditional:
        return {"class_labels": list(conditions), **kwargs}
    kwargs["prompt"] = list(conditions)
    if resolution:
        kwargs.update(height=resolution, width=resolution)
    if guidance_scale > 1:  # classifier-free guidance only: turbo models ignore negatives
        kwargs["negative_prompt"] = [negative_prompt] * len(conditions)
    return kwargs


def _is_blank(image: Image.Image, flagged: bool) -> bool:
    """Flagged by a safety checker, or all black (an RGB image's per-band extrema, computed in C)."""
    return flagged or max(high for _, high in image.getextrema()) <= 2


def read_metadata(path: str | Path) -> dict:
    """The generation record a synthgap image carries as JSON: a PNG's `synthgap` text chunk, or a JPEG's comment."""
    with Image.open(path) as im:
        text = im.text.get(PNG_TEXT_KEY) if im.format == "PNG" else im.info.get("comment")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text:
        raise SynthgapError(f"{path}: no '{PNG_TEXT_KEY}' record (not an image made by synthgap)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SynthgapError(f"{path}: its '{PNG_TEXT_KEY}' record is not valid JSON ({e})") from None


def _encode_png(image: Image.Image, meta: dict) -> bytes:
    """PNG bytes of `image` with `meta` as one JSON text chunk and the AI-generated mark (provenance.mark:
    XMP with the IPTC digital source type); deflate level 1, the fastest."""
    import io

    from synthgap.provenance.mark import XMP_PNG_KEY, ai_xmp, creator_tool

    info = PngInfo()
    info.add_text(PNG_TEXT_KEY, json.dumps(meta))  # one chunk, not one per field: Pillow writes chunks in Python
    info.add_itxt(XMP_PNG_KEY, ai_xmp(creator_tool(str(meta.get("model", "")))))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def encode_image(image: Image.Image, meta: dict, image_format: str = "png", quality: int = 75) -> bytes:
    """The saved file: a PNG (_encode_png), or a JPEG at `quality` with `meta` as JSON in its comment
    segment and the same XMP mark."""
    if image_format == "png":
        return _encode_png(image, meta)
    import io

    from synthgap.provenance.mark import ai_xmp, creator_tool

    buf = io.BytesIO()
    image.save(
        buf,
        format="JPEG",
        quality=quality,
        comment=json.dumps(meta).encode(),
        xmp=ai_xmp(creator_tool(str(meta.get("model", "")))).encode(),
    )
    return buf.getvalue()


def read_manifest(out: Path) -> tuple[list[dict], bool]:
    """Valid lines whose image exists with the recorded hash; True if anything had to be dropped."""
    from synthgap.io import sha256_file

    path = out / MANIFEST
    if not path.exists():
        return [], False
    rows, dropped = [], False
    seen = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            image = out / row["path"]
            ok = image.is_file() and row["id"] not in seen and sha256_file(image) == row["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError):
            ok = False  # a line cut short by a kill
        if ok:
            rows.append(row)
            seen.add(row["id"])
        else:
            dropped = True
    return rows, dropped


class DatasetGenerator:
    """One object per generation job: holds the pipeline, makes images, owns the output folder."""

    def __init__(self, cfg: GenerateConfig, pipeline=None):
        import dataclasses

        local = {
            k: str(Path(v).expanduser().resolve())
            for k, v in (("model", cfg.model), ("templates", cfg.templates))
            if v and Path(v).expanduser().exists()
        }
        sign = {
            k: str(Path(v).expanduser().resolve())
            for k, v in (("cert_chain", cfg.sign.cert_chain), ("key", cfg.sign.key))
            if v and Path(v).expanduser().exists()
        }
        # the same local file under another relative path is the same config
        cfg = dataclasses.replace(cfg, **local, sign=dataclasses.replace(cfg.sign, **sign))
        self.templates = Templates.load(cfg.templates)
        self.cfg = resolve_settings(cfg, self.templates)
        self.builtin = read_meta(
            self.cfg.model, "generator"
        )  # synthgap's class-conditional generator: classes, no prompts
        if self.builtin:
            unknown = [c for c in self.cfg.classes if c not in self.builtin["class_names"]]
            if unknown:
                raise SynthgapError(
                    f"{self.cfg.model} was trained on {', '.join(self.builtin['class_names'])}; "
                    f"it cannot make {', '.join(unknown)}"
                )
        else:
            self.templates.check_classes(self.cfg.classes)
        for name, value, least in (
            ("per_class", self.cfg.per_class, 1),
            ("batch_size", self.cfg.batch_size, 1),
            ("steps", self.cfg.steps, 1),
            ("size", self.cfg.size, 8),
            ("max_retries", self.cfg.max_retries, 0),
        ):
            if value < least:
                raise SynthgapError(f"config field '{name}': expected at least {least}, got {value}")
        if self.cfg.image_format not in ("png", "jpeg") or not 1 <= self.cfg.jpeg_quality <= 100:
            raise SynthgapError(
                f"config fields 'image_format', 'jpeg_quality': expected png or jpeg and 1..100, "
                f"got {self.cfg.image_format!r}, {self.cfg.jpeg_quality}"
            )
        self.signer = None
        if self.cfg.sign.enabled:
            from synthgap.provenance.mark import ManifestSigner

            self.signer = ManifestSigner(self.cfg.sign)  # a bad certificate or key fails now, not at image 1
        self._pipe = pipeline
        self._device = None

    @property
    def pipe(self):
        if self._pipe is None and self.builtin:
            from synthgap.generate.builtin import load_generator

            self._pipe = load_generator(self.cfg.model, self.cfg.device)
        if self._pipe is None:
            self._pipe = load_pipeline(self.cfg.model, self.cfg.revision, self.cfg.device, self.cfg.dtype)
            if self.cfg.attention_slicing:
                self._pipe.enable_attention_slicing()
            if self.cfg.vae_tiling and hasattr(self._pipe, "enable_vae_tiling"):
                self._pipe.enable_vae_tiling()
        return self._pipe

    # -------------------------------------------------------------- one batch, no I/O

    def prompt(self, job: Job) -> str:
        """The text the image was made from; a class-conditional generator's 'prompt' is the class name."""
        return job.cls if self.builtin else self.templates.prompt(self.cfg.seed, job.cls, job.index)

    def pipeline_kwargs(self, jobs: list[Job]) -> dict:
        """The arguments of the one pipeline call that makes `jobs`
        (benchmarks/generate_overhead.py calls the bare pipeline with exactly these)."""
        if self._device is None:  # diffusers' pipe.device walks every module: ask once
            self._device = self.pipe.device
        return pipeline_kwargs(
            [self.prompt(j) for j in jobs],
            [image_seed(self.cfg.seed, j.cls, j.index, j.attempt) for j in jobs],
            steps=self.cfg.steps,
            guidance_scale=self.cfg.guidance_scale,
            negative_prompt=self.cfg.negative_prompt,
            device=self._device,
            class_conditional=bool(self.builtin),
            resolution=self.cfg.resolution,
        )

    def render(self, jobs: list[Job]) -> list[tuple[Image.Image, bool]]:
        """Run the pipeline once for `jobs`; return (image, blanked by a safety checker or all black)."""
        out = self.pipe(**self.pipeline_kwargs(jobs))
        flags = getattr(out, "nsfw_content_detected", None) or [False] * len(jobs)
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in out.images]
        return [(im, _is_blank(im, bool(f))) for im, f in zip(images, flags)]

    def metadata(self, job: Job, native_size: tuple[int, int]) -> dict:
        return {
            "prompt": self.prompt(job),
            "negative_prompt": self.cfg.negative_prompt if self.cfg.guidance_scale > 1 else "",
            "seed": image_seed(self.cfg.seed, job.cls, job.index, job.attempt),
            "attempt": job.attempt,
            "model": self.cfg.model,
            "revision": self.cfg.revision or "",
            "scheduler": type(self.pipe.scheduler).__name__,
            "steps": self.cfg.steps,
            "guidance_scale": self.cfg.guidance_scale,
            "size": self.cfg.size,
            "native_size": list(native_size),
            "class": job.cls,
            "index": job.index,
            "synthgap": __version__,
        }

    def manifest_parameters(self, meta: dict) -> dict:
        """What a signed manifest's c2pa.created action records of one image."""
        keep = ("model", "revision", "seed", "class") + (() if self.builtin else ("prompt",))
        return {k: meta[k] for k in keep if meta.get(k) not in (None, "")}

    # -------------------------------------------------------------- the folder

    def prepare(self, out: str | Path, new: bool = False) -> Path:
        """Claim DIR for this config (DIR/generation.yaml); with new=True pick a fresh folder beside an
        existing one that holds another config."""
        out = Path(out)
        ident = identity(self.cfg, self.templates)
        remedy = "re-run with the same config to resume, use --new for a fresh folder, or choose another --out"
        folder = RunDir(out, CONFIG, "images")
        if new and folder.read() is not None and not folder.holds(ident):
            k = 2  # the first sibling that is free or holds this very config (so --new resumes too)
            while (
                sibling := RunDir(out.parent / f"{out.name}-{k}", CONFIG, "images")
            ).read() is not None and not sibling.holds(ident):
                k += 1
            log.info("config differs from %s; writing to %s", out, sibling.path)
            out, folder = sibling.path, sibling
        resuming = folder.claim(self.cfg, ident=ident, remedy=remedy)
        out.mkdir(parents=True, exist_ok=True)
        for tmp in out.rglob(".*.tmp"):  # temp files of a killed run
            tmp.unlink(missing_ok=True)
        if resuming:  # the first run's record stands
            return out
        env = environment()
        import diffusers

        env["diffusers"] = diffusers.__version__
        folder.write(self.cfg, ident=ident, templates=self.templates.source, environment=env)
        return out

    def pending(self, out: Path) -> tuple[list[Job], list[dict]]:
        rows, dropped = read_manifest(out)
        if dropped:  # rewrite without the cut or orphaned lines, atomically
            write_text(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
            log.info("%s: dropped manifest lines without a complete image; they will be made again", out / MANIFEST)
        done = {r["id"] for r in rows}
        jobs = [Job(c, i) for c in self.cfg.classes for i in range(self.cfg.per_class) if image_id(c, i) not in done]
        return jobs, rows

    def save(self, out: Path, job: Job, image: Image.Image, seconds: float, blanked: list[int]) -> dict:
        """Write one image (target size, optional native) atomically; return its manifest row."""
        meta = self.metadata(job, image.size)
        small = resize_square(image, self.cfg.size)
        fmt, quality = self.cfg.image_format, self.cfg.jpeg_quality
        data = encode_image(small, meta, fmt, quality)
        signed = {}
        if self.signer:
            t0, unsigned = time.perf_counter(), len(data)
            data = self.signer.sign(data, fmt, self.manifest_parameters(meta))
            signed = {
                "c2pa": {
                    "bytes_added": len(data) - unsigned,
                    "unsigned_bytes": unsigned,
                    "ms": round(1000 * (time.perf_counter() - t0), 2),
                }
            }
        rel = f"{job.cls}/{job.id}.{'jpg' if fmt == 'jpeg' else 'png'}"
        write_bytes(out / rel, data)
        if self.cfg.native:
            native = encode_image(image, meta, fmt, quality)
            write_bytes(
                out / "native" / rel,
                self.signer.sign(native, fmt, self.manifest_parameters(meta)) if self.signer else native,
            )
        return {
            **signed,
            "id": job.id,
            "path": rel,
            "label": job.cls,
            "source": "synthetic",
            "generator": self.cfg.model,
            "revision": self.cfg.revision,
            "prompt": meta["prompt"],
            "negative_prompt": meta["negative_prompt"],
            "seed": meta["seed"],
            "attempt": job.attempt,
            "blanked_seeds": blanked,
            "steps": self.cfg.steps,
            "guidance_scale": self.cfg.guidance_scale,
            "sha256": sha256_bytes(data),
            "seconds": round(seconds, 4),
            "device": str(self._device),
        }

    def make(self, out: Path, jobs: list[Job]) -> list[dict]:
        """Render `jobs` in one batch (blanked images again with their next seed), save; return manifest rows."""
        return self.save_all(out, self.render_checked(jobs))

    def save_all(self, out: Path, rendered: list[tuple]) -> list[dict]:
        return [self.save(out, *r) for r in rendered]

    def render_checked(self, jobs: list[Job]) -> list[tuple[Job, Image.Image, float, list[int]]]:
        """(job, image, seconds per image, blanked seeds) for each job; a blanked image is made with the next seed."""
        t0 = time.perf_counter()
        results = self.render(jobs)
        per_image = (time.perf_counter() - t0) / len(jobs)
        done = []
        for job, (image, blank) in zip(jobs, results):
            blanked = []
            while blank:  # safety checker or an all-black image: the next seed, recorded
                blanked.append(image_seed(self.cfg.seed, job.cls, job.index, job.attempt))
                if job.attempt >= self.cfg.max_retries:
                    raise SynthgapError(
                        f"image {job.id} came out blank (safety checker or all black) for {len(blanked)} seeds; "
                        "check the prompt templates or raise max_retries"
                    )
                log.warning("image %s blanked (seed %d); trying the next seed", job.id, blanked[-1])
                job = Job(job.cls, job.index, job.attempt + 1)
                ((image, blank),) = self.render([job])
            done.append((job, image, per_image, blanked))
        return done

    def _make_overlapped(self, out: Path, batches: list[list[Job]]):
        """Local runs: a writer thread saves batch k while the pipeline renders batch k+1 (PNG encoding,
        hashing and file writes stay off the model's critical path). Rows come back once written."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as writer:
            pending = None
            for batch in batches:
                rendered = self.render_checked(batch)
                if pending is not None:
                    yield pending.result()
                pending = writer.submit(self.save_all, out, rendered)
            if pending is not None:
                yield pending.result()

    def run(self, out: str | Path, *, new: bool = False, progress: bool = True, ray_workers: int | None = None) -> Path:
        """Make every missing image of the config in `out`; return the folder written.

        ray_workers: shard the work over that many Ray actors (0: one per GPU, else per CPU) instead of this process.
        """
        from synthgap.io import progress_bar

        out = self.prepare(out, new)
        jobs, _ = self.pending(out)
        total = self.cfg.per_class * len(self.cfg.classes)
        if not jobs:
            log.info("%s: all %d images present", out, total)
            return out
        batches = [jobs[i : i + self.cfg.batch_size] for i in range(0, len(jobs), self.cfg.batch_size)]
        if ray_workers is None:
            produced = self._make_overlapped(out, batches)
        else:
            produced = make_with_ray(self, out, jobs, ray_workers)
        bar = progress_bar(total=total, initial=total - len(jobs), desc="generating", unit="img", enabled=progress)
        t_start, made = time.perf_counter(), 0
        t_synced = t_start
        signed: list[dict] = []
        with open(out / MANIFEST, "a", encoding="utf-8") as manifest:
            for rows in produced:  # the images are on disk; now their lines
                manifest.write("".join(json.dumps(r) + "\n" for r in rows))
                manifest.flush()  # in the OS's hands: a killed process loses no line
                if time.perf_counter() - t_synced > SYNC_SECONDS:  # a power cut loses at most this much work
                    os.fsync(manifest.fileno())
                    t_synced = time.perf_counter()
                made += len(rows)
                bar.update(len(rows))
                bar.set_postfix(img_s=f"{made / (time.perf_counter() - t_start):.2f}")
                signed += [r["c2pa"] for r in rows if "c2pa" in r]
            os.fsync(manifest.fileno())
        bar.close()
        if signed:
            added, base = (sum(s[k] for s in signed) / len(signed) for k in ("bytes_added", "unsigned_bytes"))
            log.info(
                "signed C2PA manifests: +%.1f KB per image (%.0f%% of the %.1f KB unsigned file), %.1f ms per image",
                added / 1024,
                100 * added / base,
                base / 1024,
                sum(s["ms"] for s in signed) / len(signed),
            )
        return out


# ---------------------------------------------------------------- scale-out on Ray Data
# The (class, index) space sharded over pipeline actors. Each actor loads the pipeline once and writes its
# images atomically into the shared output folder; the driver appends their manifest lines as batches finish,
# so layout, manifest and resume semantics are those of a local run. A running cluster is joined
# (RAY_ADDRESS), else a local Ray is started on this machine.


class _PipelineActor:
    """One per GPU (or CPU worker): a DatasetGenerator that renders and saves batches."""

    def __init__(self, cfg: dict, out: str):
        self.gen = DatasetGenerator(from_dict(GenerateConfig, cfg))
        self.out = Path(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        jobs = [Job(str(c), int(i)) for c, i in zip(batch["cls"], batch["index"])]
        rows = self.gen.make(self.out, jobs)
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}


def make_with_ray(gen: DatasetGenerator, out: Path, jobs: list[Job], workers: int = 0) -> Iterator[list[dict]]:
    """Yield manifest rows batch by batch as the actors finish them."""
    try:
        import ray
    except ImportError:
        raise SynthgapError("--ray needs Ray: pip install 'ray[data]'") from None
    import torch

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # synthgap's own bar counts the images
    ctx.print_on_execution_start = False
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and gen.cfg.device in ("auto", "cuda")
    n = workers or (
        gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, torch.get_num_threads()))
    )
    cfg = to_dict(gen.cfg)
    ds = ray.data.from_items([{"cls": j.cls, "index": j.index} for j in jobs])
    ds = ds.map_batches(
        _PipelineActor,
        fn_constructor_kwargs={"cfg": cfg, "out": str(out)},
        batch_size=gen.cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=n),
        num_gpus=1 if use_gpu else 0,
        batch_format="numpy",
    )
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield [json.loads(r) for r in batch["row"]]
    except ray.exceptions.RayTaskError as e:  # a user-facing error inside an actor stays one clear line
        cause = getattr(e, "cause", None)
        if isinstance(cause, SynthgapError):
            raise SynthgapError(str(cause)) from None
        raise


def reproduce(out: str | Path, image_id_: str, pipeline=None) -> tuple[Path, float]:
    """Regenerate one image of a finished folder alone; return its path and the max pixel difference."""
    out = Path(out)
    cfg_file = out / CONFIG
    if not cfg_file.exists():
        raise SynthgapError(f"{out}: no {CONFIG} (is this a `synthgap generate` output folder?)")
    cfg = from_dict(GenerateConfig, yaml.safe_load(cfg_file.read_text())["config"])
    rows = {r["id"]: r for r in read_manifest(out)[0]}
    if image_id_ not in rows:
        raise SynthgapError(
            f"{out}: no image '{image_id_}' in {MANIFEST} (ids look like {next(iter(rows), 'bird_00000')})"
        )
    row = rows[image_id_]
    gen = DatasetGenerator(cfg, pipeline)
    job = Job(row["label"], int(row["id"].rsplit("_", 1)[1]), int(row.get("attempt", 0)))
    ((image, _),) = gen.render([job])
    small = resize_square(image, gen.cfg.size)
    target = out / "reproduced" / Path(row["path"]).name
    write_bytes(target, encode_image(small, gen.metadata(job, image.size), gen.cfg.image_format, gen.cfg.jpeg_quality))
    with Image.open(out / row["path"]) as stored, Image.open(target) as again:  # both as stored (JPEG: same encoder)
        diff = np.abs(
            np.asarray(stored.convert("RGB"), dtype=np.int16) - np.asarray(again.convert("RGB"), dtype=np.int16)
        ).max()
    return target, float(diff)


def generate(
    cfg: GenerateConfig,
    out: str | Path,
    *,
    new: bool = False,
    progress: bool = True,
    pipeline=None,
    ray_workers: int | None = None,
) -> Path:
    """Python API of `synthgap generate`."""
    return DatasetGenerator(cfg, pipeline).run(out, new=new, progress=progress, ray_workers=ray_workers)
