"""A trained classifier as one folder: `model.safetensors` (weights) and `classifier.json` (architecture,
classes, input size, normalisation, flip TTA, test figures, what it was trained on, versions). `synthgap
train`, every run of a transfer study and the pipeline write it; `synthgap classify` and the web app load it,
the one format for both. Folders made before safetensors hold `model.pt` (a state dict), read the same way.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synthgap import SynthgapError
from synthgap.artifacts import KINDS, check_format
from synthgap.config import to_dict
from synthgap.io import load_weights, save_weights, write_json
from synthgap.train.config import TrainConfig

META, WEIGHTS, OLD_WEIGHTS = KINDS["classifier"].meta, "model.safetensors", "model.pt"


@dataclass
class Classifier:
    """A trained classifier with what it needs to be used: class names, input size, flip TTA."""

    name: str
    model: torch.nn.Module
    classes: list[str]
    image_size: int
    tta: bool
    info: dict = field(default_factory=dict)  # provenance and metrics (classifier.json without the config)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for uint8 images N x 3 x image_size x image_size."""
        from synthgap.train.evaluate import predict_proba

        device = next(self.model.parameters()).device
        return predict_proba(self.model, images, batch_size=max(1, len(images)), tta=self.tta, device=device)

    def ranked(self, probs: torch.Tensor, top: int | None = None) -> list[dict]:
        """[{"class", "probability"}] of one image's probabilities, most likely first (`top` of them)."""
        pairs = sorted(zip(self.classes, probs.tolist()), key=lambda cp: -cp[1])[:top]
        return [{"class": c, "probability": round(p, 6)} for c, p in pairs]

    def classify_files(self, paths: list[str], top: int | None = None, chunk: int = 256) -> list[dict]:
        """{"label", "probabilities"} per file, `chunk` files at a time; an unreadable one gets {"error": reason}."""
        from synthgap.data.images import decode_image

        out: list[dict] = []
        for start in range(0, len(paths), chunk):
            arrays, where, part = [], [], []
            for i, p in enumerate(paths[start : start + chunk]):
                arr, reason = decode_image(p, self.image_size)
                part.append({"label": None, "error": reason} if arr is None else {})
                if arr is not None:
                    arrays.append(torch.from_numpy(arr).permute(2, 0, 1))
                    where.append(i)
            if arrays:
                for i, probs in zip(where, self.predict(torch.stack(arrays))):
                    ranked = self.ranked(probs, top)
                    part[i] = {"label": ranked[0]["class"], "probabilities": ranked}
            out += part
        return out


def classifier_meta(
    cfg: TrainConfig, classes: list[str], image_size: int, metrics: dict, trained_on: dict, name: str | None = None
) -> dict:
    """The classifier.json of a trained model: metrics {name: value} on its test data, trained_on its data."""
    from synthgap.io import environment
    from synthgap.models.registry import CLASSIFIER_ALIASES, MODELS

    info = MODELS[CLASSIFIER_ALIASES.get(cfg.model, cfg.model)]
    env = environment()
    return {
        **KINDS["classifier"].stamp(),  # kind, format_version (synthgap.artifacts)
        "name": name,
        "architecture": cfg.model,
        "widths": cfg.widths,
        "classes": list(classes),
        "image_size": int(image_size),
        # What train.augment.normalize applies to [0, 1] pixels before the model (the registry's entry).
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "tta": cfg.tta,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "metrics": metrics,
        "trained_on": trained_on,
        "config": to_dict(cfg),
        "versions": {k: env[k] for k in ("synthgap", "torch", "torchvision", "python")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_classifier(folder: str | os.PathLike, model: torch.nn.Module | None, meta: dict) -> Path:
    """model.safetensors (unless model is None: already saved), then classifier.json, last: a folder with it
    is complete."""
    folder = Path(folder)
    if model is not None:
        save_weights(folder / WEIGHTS, model)
    write_json(folder / META, meta)
    return folder


def load_classifier(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A folder with classifier.json and its weights: a `synthgap train` output, or a transfer study's
    runs/<set>/seed<k>."""
    from synthgap.config import from_dict
    from synthgap.models import build_model

    folder = Path(folder)
    weights = next((folder / w for w in (WEIGHTS, OLD_WEIGHTS) if (folder / w).is_file()), None)
    if not (folder / META).is_file() or weights is None:
        raise SynthgapError(
            f"{folder}: not a classifier (expected {META} and {WEIGHTS}); make one with `synthgap train "
            "--data SPEC --out DIR`, or pass a transfer study's runs/<set>/seed<k> (a study made before "
            f"{META} existed writes it when run again: its finished runs are read back, not retrained)"
        )
    unreadable = (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, SynthgapError)
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except unreadable as e:
        raise SynthgapError(f"{folder / META}: unreadable or incomplete ({type(e).__name__}: {e})") from None
    if isinstance(meta, dict):  # a newer format or another kind says so, before its fields are read
        check_format(meta, "classifier", folder / META)
    try:
        cfg = from_dict(TrainConfig, meta["config"])
        classes, image_size = list(meta["classes"]), int(meta["image_size"])
    except unreadable as e:
        raise SynthgapError(f"{folder / META}: unreadable or incomplete ({type(e).__name__}: {e})") from None
    model = build_model(cfg.model, len(classes), widths=cfg.widths)
    try:
        state = (
            load_weights(weights)
            if weights.name == WEIGHTS
            else torch.load(weights, map_location="cpu", weights_only=True)
        )
        model.load_state_dict(state)
    except Exception as e:
        raise SynthgapError(f"{weights}: weights do not fit a {cfg.model} with {len(classes)} classes ({e})") from None
    info = {k: v for k, v in meta.items() if k not in ("config", "kind", "format_version", "name")}
    return Classifier(meta.get("name") or folder.name, model.to(device).eval(), classes, image_size, cfg.tta, info)
