"""The models a worker serves, loaded once per worker process, and what the views ask of them.

`Models` is the app's one extension object (``current_app.extensions["synthgap"]``, see
`get_models`): the classifier and detector each behind a micro-batcher, the generator behind a
bounded per-device queue.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flask import current_app
from PIL import Image
from werkzeug.exceptions import BadRequest, NotFound

from synthgap import SynthgapError
from synthgap.provenance import combine, read_provenance
from synthgap.serve.batching import DeviceQueue, MicroBatcher
from synthgap.serve.config import ServeConfig
from synthgap.serve.inputs import GenerateRequest
from synthgap.serve.retention import Retention
from synthgap.train.classifier import Classifier, load_classifier  # noqa: F401 (Classifier: part of this API)

log = logging.getLogger("synthgap")
TINY_MODEL = "synthgap-tiny"
PREVIEW_SIDE = 256  # the Check page's preview of an upload
DECODE_MARGIN = 8  # an upload is decoded with its shorter side at least 8x the largest thumbnail a model reads


def public_name(spec: str | None) -> str | None:
    """What a visitor may see of a model or data spec: a local folder by its last two parts (e.g.
    pipeline-small/detector), never the server path; a hub id or a named set (cifar10, hf:...) as it is."""
    if not spec or ("/" not in spec and os.sep not in spec):
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists() or spec.startswith((".", "~")):
        return "/".join(path.resolve().parts[-2:])
    return spec


def _public_specs(value: Any) -> Any:
    """Data specs inside a model's provenance record, with public_name applied to every string."""
    if isinstance(value, dict):
        return {k: _public_specs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_specs(v) for v in value]
    return public_name(value) if isinstance(value, str) else value


# ------------------------------------------------------------------ generator


@dataclass
class Generator:
    """A diffusers text-to-image pipeline with synthgap's prompt templates and family defaults, or a
    generator trained by `synthgap generator train` (class-conditional: `class_names`, no prompts)."""

    name: str
    pipe: Any
    templates: Any  # synthgap.generate.Templates
    steps: int
    guidance_scale: float
    negative_prompt: str
    queue: DeviceQueue
    device: torch.device  # asked once: diffusers' pipe.device walks every module
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)  # what it was trained on and its measured figures, when recorded

    @property
    def classes(self) -> list[str]:
        return list(self.class_names or self.templates.data["classes"])

    def render(self, prompt: str, seed: int, steps: int, guidance_scale: float) -> Image.Image:
        """One image; `prompt` is the class for a class-conditional generator."""
        from synthgap.generate.generator import pipeline_kwargs

        out = self.pipe(
            **pipeline_kwargs(
                [prompt],
                [seed],
                steps=steps,
                guidance_scale=guidance_scale,
                negative_prompt=self.negative_prompt,
                device=self.device,
                class_conditional=bool(self.class_names),
            )
        )
        return out.images[0].convert("RGB")


def _generator_record(folder: Path) -> dict:
    """A trained generator's training.json and, in a pipeline folder, its set's quality.json (FID-Lite0, CAS)."""
    import json

    record = {}
    if (folder / "training.json").is_file():
        t = json.loads((folder / "training.json").read_text())
        record["training"] = {
            "steps": t.get("steps"),
            "seconds": t.get("seconds"),
            "trained_on": _public_specs({k: t.get("data", {}).get(k) for k in ("name", "n")}),
        }
    quality = folder.parent / "synthetic" / "quality.json"
    if quality.is_file():
        q = json.loads(quality.read_text())
        record["generated_set"] = {
            k: q.get(k) for k in ("images", "fid_lite0", "cas", "real_to_real", "real_to_real_baseline")
        }
    return record


def load_generator(model: str, device: str, queue: DeviceQueue) -> Generator:
    from synthgap.artifacts import artifact_kind, load_artifact
    from synthgap.data.images import cache_dir
    from synthgap.generate import Templates, load_pipeline, save_tiny_pipeline

    source = model
    if model == TINY_MODEL:  # the tiny offline demo pipeline, built once into the cache
        folder = cache_dir() / TINY_MODEL
        if not (folder / "model_index.json").exists():
            save_tiny_pipeline(folder)
        source = str(folder)
    templates = Templates.load()
    if artifact_kind(source, missing_ok=True) == "generator":  # synthgap's own: else a diffusers id or folder
        pipe = load_artifact(source, "generator", device=device)
        info = pipe.config
        return Generator(
            public_name(model),
            pipe,
            templates,
            int(info["default_steps"]),
            float(info["default_guidance_scale"]),
            "",
            queue,
            pipe.device,
            list(info["class_names"]),
            _generator_record(Path(source)),
        )
    family = templates.family_settings(model)
    pipe = load_pipeline(source, device=device)
    return Generator(
        public_name(model),
        pipe,
        templates,
        int(family.get("steps", 25)),
        float(family.get("guidance_scale", 7.5)),
        templates.data["negative_prompt"],
        queue,
        pipe.device,
    )


# ------------------------------------------------------------------ all of them


def png_data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """An image as a data: URI (the UI shows uploads and results without writing files)."""
    if max_side and max(image.size) > max_side:
        from PIL import ImageOps

        image = ImageOps.contain(image, (max_side, max_side))  # resized straight from the original: no copy of it
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


FLAG_OF = {
    "classifier": "--classifier RUN (a synthgap train folder)",
    "detector": "--detector BUNDLE (a synthgap detector train folder)",
    "generator": "--generator MODEL (a diffusers model, a synthgap generator train folder, or synthgap-tiny)",
}


class Models:
    """The loaded models of one worker and the operations the API and the UI share."""

    def __init__(self, cfg: ServeConfig):
        from synthgap.device import select_device

        self.cfg = cfg
        self.output = Path(cfg.output).resolve() if cfg.output else None
        device = select_device(cfg.device)
        wait = cfg.batch_wait_ms / 1000
        self.classifier = load_classifier(cfg.classifier, device) if cfg.classifier else None
        # Detectors: one, or several asked in order, each image answered by the first whose training domain
        # holds it (synthgap.detect.route). `detector` is the first bundle, `detector_name` the set's name.
        self.detectors, self.detector, self.detector_name, self.detector_names = None, None, None, []
        if cfg.detectors:
            from synthgap.detect.route import DetectorSet

            self.detectors = DetectorSet.load(cfg.detectors, device)
            self.detector = self.detectors.members[0].bundle
            self.detector_names = [public_name(str(m.folder)) for m in self.detectors.members]
            self.detector_name = ", ".join(self.detector_names)
        # One lock file per device, shared by every worker (and every synthgap server) of this user.
        lock_file = os.path.join(tempfile.gettempdir(), f"synthgap-generate-{os.getuid()}-{device}.lock")
        self.generator = (
            load_generator(
                cfg.generator,
                cfg.device,
                DeviceQueue(cfg.generate_queue, cfg.generate_timeout, lock_file, name=cfg.generator),
            )
            if cfg.generator
            else None
        )
        self._classify = (
            MicroBatcher(self.classifier.predict, cfg.batch_size, wait, "classifier") if self.classifier else None
        )
        self._detects = [
            MicroBatcher(
                lambda x, b=m.bundle: b.predict(x, batch_size=len(x)), cfg.batch_size, wait, f"detector {m.name}"
            )
            for m in (self.detectors.members if self.detectors else [])
        ]
        self._detect = self._detects[0] if self._detects else None
        from synthgap.serve.admission import PixelBudget

        self.admission = PixelBudget(cfg.pixel_budget, cfg.admission_wait)
        self.decode_side = self._decode_side()
        from synthgap.provenance import ProvenanceOptions

        self.provenance_options = ProvenanceOptions(cfg.trust_anchors, cfg.fetch_remote_manifests)
        self.signer = None
        if cfg.sign_cert_chain and self.generator:
            from synthgap.provenance.mark import ManifestSigner

            self.signer = ManifestSigner(cfg.signing())
        # What is written (generated images; uploads, when asked) under a size cap and count and age limits.
        self.writes = [w for w, on in (("generated images", self.generator), ("uploads", cfg.keep_uploads)) if on]
        self.retention = (
            Retention(self.output, cfg.keep_max_bytes, cfg.keep_max_files, cfg.keep_max_age_hours)
            if self.output and self.writes
            else None
        )
        if not (self.classifier or self.detector or self.generator):
            log.warning(
                "serving no models%s; make them with: %s",
                f" ({cfg.run} holds none yet)" if cfg.run else "",
                "; ".join(cfg.setup_hint.splitlines()),
            )

    def _decode_side(self) -> int | None:
        """What the models need of an upload's shorter side (upright_rgb's min_side): None (every pixel) when a
        detector reads windows at native scale; else room for the largest thumbnail, DECODE_MARGIN times over,
        so the thumbnail is a downscale of a downscale no coarser than that (tests/test_serve.py measures the
        difference to a whole decode)."""
        bundles = [m.bundle for m in self.detectors.members] if self.detectors else []
        if any(b.chain.crop for b in bundles):
            return None
        sizes = [b.image_size for b in bundles] + ([self.classifier.image_size] if self.classifier else [])
        return max(PREVIEW_SIDE, DECODE_MARGIN * max(sizes, default=0))

    # -------------------------------------------------------------- names

    def names(self) -> dict[str, str | None]:
        return {
            "classifier": self.classifier.name if self.classifier else None,
            "detector": self.detector_name,
            "generator": self.generator.name if self.generator else None,
        }

    def missing(self, kind: str) -> str:
        """What makes a model this server lacks (its API's 404s; the pages show setup_hint as commands)."""
        return (
            f"a pipeline folder has one ({'; '.join(self.cfg.setup_hint.splitlines())}), or start the server "
            f"with {FLAG_OF[kind]}"
        )

    def require(self, kind: str, requested: str | None = None) -> None:
        """404 if this server has no model of `kind`; 400 if the client named another model than it has."""
        name = self.names()[kind]
        if name is None:
            raise NotFound(f"this server runs without a {kind}: {self.missing(kind)}")
        known = [name] + (self.detector_names + self.detectors.names if kind == "detector" else [])
        if requested is not None and requested not in known:
            raise BadRequest(f"unknown {kind} '{requested[:200]}'; this server has '{name}' (see /api/models)")

    # -------------------------------------------------------------- predictions

    def classify(self, image: Image.Image, top: int | None = None) -> dict:
        from synthgap.data.images import resize_square

        assert self.classifier and self._classify
        x = torch.from_numpy(_array(resize_square(image, self.classifier.image_size))).permute(2, 0, 1)
        ranked = self.classifier.ranked(self._classify(x), top)
        return {"model": self.classifier.name, "label": ranked[0]["class"], "probabilities": ranked}

    def detect(self, image: Image.Image, data: bytes | None = None, model: str | None = None) -> dict:
        """P(AI-generated) and the verdict record of detect.domain.verdicts, from the detector whose training
        domain holds the image (synthgap.detect.route; `model`: only that detector); `data`: the file's bytes,
        whose format, size and JPEG quality decide which detector's training domain holds the image."""
        from synthgap.detect.audit import metadata_of_bytes

        assert self.detectors and self._detects
        try:
            meta = metadata_of_bytes(data) if data is not None else None
        except SynthgapError:
            meta = None
        members = self.detectors.members
        chosen = [k for k, m in enumerate(members) if model in (m.name, self.detector_names[k])]
        detectors = self.detectors.only(members[chosen[0]].name) if chosen else self.detectors
        index = {m.name: k for k, m in enumerate(members)}
        band = self.cfg.unsure_band
        rec = detectors.assess(
            [image],  # each bundle makes its own views: its thumbnail, or its windows
            [meta],
            band,
            predict=lambda k: lambda b, m=self._detects[index[detectors.members[k].name]]: m.many(b).view(-1),
        )[0]
        by = rec.get("answered_by")
        t = rec.get("threshold")
        real_bound = rec.pop("real_bound", None)  # a bundle with real_quantile: "unsure" from there up
        low = None if t is None else t - band
        if real_bound is not None:
            low = min(low, real_bound)
        rec = {
            "model": self.detector_names[index[by["name"]]] if by else None,
            **rec,
            "unsure_band": [round(max(0.0, low), 6), round(min(1.0, t + band), 6)] if t is not None else None,
        }
        if data is not None:
            rec["provenance"] = self.provenance(data)
            rec["answer"] = combine(rec["provenance"], rec)
        return rec

    def provenance(self, data: bytes) -> dict:
        """What the file says about where it came from (synthgap.provenance.read_provenance)."""
        return read_provenance(data, self.provenance_options)

    def check(self, image: Image.Image, data: bytes | None = None) -> dict:
        """What the loaded classifier and detector say about one image, its provenance and the one answer
        (the UI's Check page)."""
        detection = self.detect(image, data) if self.detector else None
        provenance = (
            detection["provenance"]
            if detection and data is not None
            else (self.provenance(data) if data is not None else None)
        )
        return {
            "classifier": self.classify(image) if self.classifier else None,
            "detector": detection,
            "provenance": provenance,
            "answer": combine(provenance, detection) if provenance else None,
        }

    # -------------------------------------------------------------- generation

    def generate(self, req: GenerateRequest) -> dict:
        """Render one image (waiting for the device, or QueueFull), save it if an output folder is set,
        and say what the classifier and the detector make of it."""
        from synthgap.generate.generator import encode_image

        gen = self.generator
        assert gen is not None
        if gen.class_names and req.prompt is not None:
            raise BadRequest(
                f"this generator ({gen.name}) is class-conditional: send 'class' "
                f"({', '.join(gen.class_names)}), not 'prompt'"
            )
        if gen.class_names:
            prompt = req.cls  # a class-conditional model's 'prompt' is its class, as in `synthgap generate`
        else:
            prompt = req.prompt if req.prompt is not None else gen.templates.prompt(req.seed, req.cls, 0)
        steps = req.steps or min(gen.steps, self.cfg.max_steps)
        guidance = gen.guidance_scale if req.guidance_scale is None else req.guidance_scale
        with gen.queue.turn():
            t0 = time.perf_counter()
            image = gen.render(prompt, req.seed, steps, guidance)
            seconds = time.perf_counter() - t0
        meta = {
            "prompt": prompt,
            "negative_prompt": gen.negative_prompt if guidance > 1 else "",
            "seed": req.seed,
            "model": gen.name,
            "scheduler": type(gen.pipe.scheduler).__name__,
            "steps": steps,
            "guidance_scale": guidance,
            "class": req.cls or "",
        }
        png = encode_image(image, meta)  # a PNG: the generation record and the AI-generated mark travel in it
        if self.signer and min(image.size) >= self.cfg.sign_min_side:
            png = self.signer.sign(
                png, "png", {k: meta[k] for k in ("model", "seed", "prompt", "class") if meta[k] != ""}
            )
        saved = None
        if self.retention:
            saved = self.retention.keep(
                f"generated/{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(png).hexdigest()[:12]}.png", png
            )
        return {
            **meta,
            "class": req.cls,
            "width": image.width,
            "height": image.height,
            "seconds": round(seconds, 3),
            "image": base64.b64encode(png).decode(),
            "saved": saved,
            **self.check(image, png),
        }

    def keep_upload(self, data: bytes, fmt: str) -> str | None:
        """Keep an uploaded file in OUTPUT/uploads under its hash, if configured; never under a client's name."""
        if not (self.retention and self.cfg.keep_uploads):
            return None
        return self.retention.keep(f"uploads/{hashlib.sha256(data).hexdigest()}.{fmt.lower()}", data)

    # -------------------------------------------------------------- description

    def _describe_detector(self, k: int) -> dict:
        member = self.detectors.members[k]
        return _detector_record(self.detector_names[k], member, self.cfg.unsure_band, self._detects[k].batch_sizes)

    def describe(self) -> dict:
        """What is loaded, its metrics and where it came from (/api/models and the Models page)."""
        out: dict[str, Any] = {"classifier": None, "detector": None, "generator": None}
        if self.classifier:
            out["classifier"] = {
                "name": self.classifier.name,
                **_public_specs(self.classifier.info),
                "recent_batch_sizes": self._classify.batch_sizes[-10:],
            }
        if self.detectors:
            out["detectors"] = [self._describe_detector(k) for k in range(len(self.detectors))]
            out["detector"] = out["detectors"][0]  # the first (the only one, mostly): its shape as before
            out["routing"] = (
                "each image goes to the first detector, in this order, whose training domain holds it: "
                + ", ".join(self.detectors.names)
            )
        if self.generator:
            g = self.generator
            out["generator"] = {
                "name": g.name,
                **g.info,
                "pipeline": type(g.pipe).__name__,
                "scheduler": type(g.pipe.scheduler).__name__,
                "device": str(g.device),
                "default_steps": g.steps,
                "default_guidance_scale": g.guidance_scale,
                "max_steps": self.cfg.max_steps,
                "classes": g.classes,
                "queue": {"pending": g.queue.pending, "capacity": self.cfg.generate_queue},
            }
        if not self.cfg.show_versions:  # exact library versions tell a visitor which known flaws to try
            for record in (out["classifier"], out["generator"], *out.get("detectors", [])):
                if record:
                    record.pop("versions", None)
        out["retention"] = (
            self.retention.describe(self.writes)
            if self.retention
            else {
                "writes": [],
                "max_bytes": None,
                "max_files": None,
                "max_age_hours": None,
                "summary": "Nothing is written on the server: generated images and uploads are only sent back",
            }
        )
        return out


def _detector_record(name: str, member, unsure_band: float, batch_sizes: list[int]) -> dict:
    """One detector as /api/models and the Models page show it: by name, never by its server path."""
    from synthgap.detect.route import public_probes

    bundle = member.bundle
    meta = bundle.meta
    return {
        "name": name,
        "answers_as": member.name,
        "architecture": meta.get("architecture"),
        "image_size": bundle.image_size,
        "input": {
            k: meta["preprocessing"][k]
            for k in ("input", "input_why", "crop_size", "crop_grid")
            if k in meta["preprocessing"]
        },
        "threshold": bundle.threshold,
        "unsure_band": unsure_band,
        "metrics": meta.get("metrics", {}),
        "probes": public_probes(meta.get("probes")),
        "domain": _domain_summary(meta.get("domain")),
        "format_bias": meta.get("format_bias"),
        "data_audit": _audit_counts(meta.get("data_audit")),
        "robustness": meta.get("robustness"),
        "trained_on": _public_specs(meta.get("specs")),
        "versions": meta.get("versions"),
        "created": meta.get("created"),
        "recent_batch_sizes": batch_sizes[-10:],
    }


def _domain_summary(domain: dict | None) -> dict | None:
    """The pixel sizes, formats and JPEG qualities a detector was trained on (what routes an image to it)."""
    if not domain:
        return None
    return {k: domain[k] for k in ("width", "height", "formats", "jpeg_quality") if k in domain}


def _audit_counts(summary: dict | None) -> dict | None:
    """The data audit of a bundle's training data, without the parts' names (they can be server paths)."""
    if not summary:
        return None
    keep = ("dedupe", "audited", "images", "pairs", "counts", "label_conflicts")
    return {
        **{k: summary[k] for k in keep if k in summary},
        "test_images_with_training_twin": sum((summary.get("test_images_with_training_twin") or {}).values()),
        "removed": sum(r["removed"] for r in (summary.get("removed") or {}).values()),
    }


def _array(image: Image.Image):
    import numpy as np

    return np.asarray(image, dtype=np.uint8).copy()


def get_models() -> Models:
    """The current app's models (as flaskr's get_db)."""
    return current_app.extensions["synthgap"]
