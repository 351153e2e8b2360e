"""The detector: a backbone and the shared head, with its preprocessing inside, saved as a bundle.

A bundle is one folder: `model.safetensors` (weights) and `detector.json` (backbone, head,
preprocessing, threshold, metrics, provenance). Anything that loads it (CLI, web app) gets the
same predictions without knowing how it was trained.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synthgap import SynthgapError
from synthgap.artifacts import KINDS, check_format
from synthgap.detect.domain import PERTURBATIONS, content_check, content_scores, perturbed, verdicts
from synthgap.io import load_weights, save_weights, write_json
from synthgap.models.backbones import Backbone
from synthgap.models.registry import build_backbone, lookup
from synthgap.train.augment import MEAN as SYNTHGAP_MEAN
from synthgap.train.augment import STD as SYNTHGAP_STD

WEIGHTS, META = "model.safetensors", KINDS["detector"].meta
BANK = "domain.safetensors"  # the training images' features, for the content check (detect.domain)


class Head(nn.Sequential):
    """Identical for every backbone: Dense(width) ReLU -> dropout -> 1 logit (sigmoid = P(synthetic))."""

    def __init__(self, num_features: int, width: int = 128, dropout: float = 0.3):
        super().__init__(nn.Linear(num_features, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1))


class LevelHeads(nn.Module):
    """One head per feature level (feature_blocks with head_per_block), each reading its own part of the
    features; the detector's logit is the mean of theirs. They learn apart (`each`, one loss a head): one head
    over both levels leans on the top block's content features, two trained apart keep what the low level
    knows about how an image was made (docs/benchmarks.md, "Which blocks' features")."""

    def __init__(self, widths: list[int], width: int = 128, dropout: float = 0.3):
        super().__init__()
        self.widths = list(widths)
        self.heads = nn.ModuleList(Head(w, width, dropout) for w in self.widths)

    def each(self, features: torch.Tensor) -> torch.Tensor:
        """N x heads logits."""
        return torch.cat([head(part) for head, part in zip(self.heads, features.split(self.widths, 1))], 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.each(features).mean(1, keepdim=True)


class Detector(nn.Module):
    """Takes synthgap's standard input (uint8 images normalised with the core's constants, any
    size) and maps it to the backbone's own resolution and normalisation before the features."""

    def __init__(self, backbone: Backbone, head: Head | LevelHeads, input_size: int, mean, std):
        super().__init__()
        self.backbone, self.head, self.input_size = backbone, head, input_size
        # x01 = x * S + M, then (x01 - mean) / std: one affine map per channel.
        scale = SYNTHGAP_STD.view(3) / torch.tensor(std)
        shift = (SYNTHGAP_MEAN.view(3) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def backbone_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > self.input_size,
            )
        return x * self.scale + self.shift

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.backbone_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_detector(
    backbone: str,
    *,
    pretrained: bool = True,
    input_size: int | None = None,
    head_width: int = 128,
    dropout: float = 0.3,
    model_id: str | None = None,
    revision: str | None = None,
    hub_config: dict | None = None,
    blocks: list[int] | None = None,
    head_per_block: bool = False,
) -> Detector:
    """blocks: features from these blocks' outputs, pooled and concatenated (Backbone.use_blocks); None: the top's.
    head_per_block: one head per block's features, the logit their mean (LevelHeads)."""
    info = lookup("backbone", backbone)
    if head_width < 1 or not 0 <= dropout < 1:
        raise SynthgapError(
            f"detector head: width must be at least 1 and dropout in [0, 1), got {head_width}, {dropout}"
        )
    size = input_size or info.input_size
    if size < 32 or size % 32:
        raise SynthgapError(f"detector input_size: expected a multiple of 32 (32, 64, 96, ...), got {size}")
    bb = build_backbone(
        backbone,
        pretrained=pretrained and info.pretrainable,
        model_id=model_id,
        revision=revision,
        hub_config=hub_config,
    )
    if blocks is not None:
        bb.use_blocks(list(blocks))
    if head_per_block and len(bb.tap_widths) < 2:
        raise SynthgapError(f"head_per_block: expected feature_blocks of two blocks or more, got {blocks}")
    head = (
        LevelHeads(bb.tap_widths, head_width, dropout) if head_per_block else Head(bb.num_features, head_width, dropout)
    )
    return Detector(bb, head, size, info.mean, info.std)


@dataclass
class DetectorBundle:
    """A trained detector and what it needs to be used: preprocessing, threshold, metrics."""

    model: Detector
    meta: dict = field(default_factory=dict)
    bank: torch.Tensor | None = None  # features of training images (detect.domain.content_scores), or None

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def chain(self):
        """How an image becomes this detector's input (synthgap.detect.crops.InputChain)."""
        from synthgap.detect.crops import InputChain

        return InputChain.of(self.meta["preprocessing"])

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """P(synthetic) per view: uint8 views N x 3 x S x S, as `views` makes them. batch_size: default
        256 views of 64 x 64 px, fewer of larger ones (memory follows the pixels of a batch)."""
        from synthgap.train.evaluate import predict_proba
        from synthgap.train.robust import jpeg

        quality = self.meta["preprocessing"].get("normalize_format")
        if quality and not self.chain.crop:  # crops are cut from the normalised image (InputChain.native)
            images = jpeg(images, int(quality))
        device = next(self.model.parameters()).device
        side = max(images.shape[-2:]) if images.ndim == 4 else 64
        batch_size = batch_size or max(8, 256 * 64 * 64 // max(side, self.model.input_size) ** 2)
        return predict_proba(self.model, images, batch_size=batch_size, tta=self.meta.get("tta", False), device=device)[
            :, 1
        ]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The trained backbone's features of uint8 views N x 3 x S x S, prepared as `predict` prepares them."""
        from synthgap.train.augment import normalize
        from synthgap.train.robust import jpeg

        quality = self.meta["preprocessing"].get("normalize_format")
        if quality and not self.chain.crop:
            images = jpeg(images, int(quality))
        self.model.eval()
        device = next(self.model.parameters()).device
        side = max(images.shape[-2:], default=64)
        step = max(8, 256 * 64 * 64 // max(side, self.model.input_size) ** 2)
        return torch.cat(
            [
                self.model.features(normalize(images[i : i + step].to(device))).float().cpu()
                for i in range(0, len(images), step)
            ]
        )

    def set_features(self, s, *, workers: int = 2) -> torch.Tensor:
        """Per image of an ImageSet, the mean of its views' features: what the content check compares."""
        chain = self.chain
        if not chain.crop:
            return self.features(s.images)
        from synthgap.detect.crops import eval_batches

        out = [
            self.features(x.flatten(0, 1)).view(*x.shape[:2], -1).mean(1)
            for _, x in eval_batches(s.files, chain, workers=workers)
        ]
        return torch.cat(out) if out else torch.empty(0, self.model.backbone.num_features)

    def views(self, image) -> torch.Tensor:
        """The model inputs of one upright RGB PIL image (V x 3 x S x S uint8): its thumbnail, or its windows."""
        return self.chain.eval_views(image)

    def predict_set(self, s, *, workers: int = 2, progress: bool = False) -> torch.Tensor:
        """P(synthetic) per image of an ImageSet: of its thumbnails, or (crops) the mean over the windows of its files."""
        from synthgap.detect.crops import predict_views

        chain = self.chain
        if not chain.crop:
            return self.predict(s.images)
        if not s.files:
            raise SynthgapError(
                f"{s.name}: this detector reads windows of image files at their own scale; "
                "these images did not come from files"
            )
        device = next(self.model.parameters()).device
        return predict_views(
            self.model,
            s.files,
            chain,
            tta=self.meta.get("tta", False),
            device=device,
            workers=workers,
            progress=progress,
            desc=f"predict {s.name}",
        )[..., 1].mean(1)

    @property
    def domain(self) -> dict | None:
        return self.meta.get("domain")

    @property
    def real_bound(self) -> dict | None:
        """{"p", "quantile", "n_val_real"}: an answer is "real" only below p, the real_quantile of the validation
        real images' P(synthetic); None: below the threshold."""
        return self.meta.get("real_bound")

    def assess(self, views, metas: list[dict | None], band: float = 0.0, predict=None) -> list[dict]:
        """The verdict records of detect.domain.verdicts for images given by their views (one V x 3 x S x S
        tensor per image, from `views`; or one tensor N x 3 x S x S, a view each) whose file metadata are
        `metas`: P(synthetic) (the mean over the views, with their spread), its range under mild
        perturbations, the domain check, the rule."""
        predict = predict or self.predict
        views = list(views[:, None]) if isinstance(views, torch.Tensor) else list(views)
        counts = [len(v) for v in views]
        x = torch.cat(views)
        p, pp = predict(x), predict(perturbed(x)).view(len(PERTURBATIONS), -1)
        starts = torch.tensor([0, *counts]).cumsum(0)[:-1]
        index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))

        def mean(v):  # per image, over its views
            return torch.zeros(len(counts)).index_add_(0, index, v.float()) / torch.tensor(counts)

        content = None
        if self.bank is not None and content_check(self.domain):
            f = self.features(x)
            per_image = torch.zeros(len(counts), f.shape[1]).index_add_(0, index, f) / torch.tensor(counts)[:, None]
            content = content_scores(per_image, self.bank, self.domain["content"]["k"])
        records = verdicts(
            mean(p),
            torch.cat([mean(row) for row in pp]),
            self.threshold,
            metas,
            self.domain,
            band,
            content,
            real_bound=self.real_bound,
        )
        for rec, start, n in zip(records, starts.tolist(), counts):
            if n > 1:
                part = p[start : start + n].float()
                rec["views"] = {
                    "n": n,
                    "p_min": round(float(part.min()), 6),
                    "p_max": round(float(part.max()), 6),
                    "p_std": round(float(part.std()), 6),
                }
        return records

    def assess_files(self, paths: list[str], chunk: int = 64) -> list[dict]:
        """assess() per file, `chunk` files at a time; a file that is not a readable image gets {"error": reason}."""
        from synthgap.data.images import decode_native
        from synthgap.detect.audit import file_metadata

        out: list[dict] = []
        for start in range(0, len(paths), chunk):
            views, metas, where = [], [], []
            part: list[dict] = [{} for _ in paths[start : start + chunk]]
            for i, p in enumerate(paths[start : start + chunk]):
                im, reason = decode_native(p)
                if im is None:
                    part[i] = {"p_synthetic": None, "verdict": None, "error": reason}
                    continue
                views.append(self.views(im))
                metas.append(file_metadata(p))
                where.append(i)
            if views:
                for i, rec in zip(where, self.assess(views, metas)):
                    part[i] = rec
            out += part
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / WEIGHTS, self.model)
        if self.bank is not None:
            save_weights(folder / BANK, {"features": self.bank.half()})
        write_json(folder / META, self.meta)  # written last: a folder with detector.json is complete
        return folder


def load_bundle(folder: str | os.PathLike, device: str | torch.device = "cpu") -> DetectorBundle:
    folder = Path(folder)
    if not (folder / META).exists() or not (folder / WEIGHTS).exists():
        raise SynthgapError(
            f"{folder}: not a detector bundle (expected {META} and {WEIGHTS}; make one with `synthgap detector train`)"
        )
    try:
        meta = json.loads((folder / META).read_text())
        if isinstance(meta, dict):  # a newer format or another kind says so, before its fields are read
            check_format(meta, "detector", folder / META)
        arch = meta["architecture"]
        hub = arch.get("hub") or {}
        model = build_detector(
            arch["backbone"],
            pretrained=False,
            input_size=arch["input_size"],
            head_width=arch["head_width"],
            dropout=arch["dropout"],
            hub_config=hub.get("config"),
            blocks=arch.get("blocks"),
            head_per_block=arch.get("head_per_block", False),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SynthgapError(f"{folder / META}: unreadable or incomplete ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(load_weights(folder / WEIGHTS))
    except Exception as e:
        raise SynthgapError(f"{folder / WEIGHTS}: weights do not fit the architecture in {META} ({e})") from None
    bank = None
    if (folder / BANK).exists() and ((meta.get("domain") or {}).get("content") or {}).get("threshold") is not None:
        bank = load_weights(folder / BANK)["features"].float()
    return DetectorBundle(model.to(device).eval(), meta, bank)
