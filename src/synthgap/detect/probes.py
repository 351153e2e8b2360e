"""What a shortcut gives on the same data, beside every detector's own figure.

A detector is credited only with what it gets beyond two probes:
- the metadata probe: the format-bias audit (a small tree on format, pixel size, JPEG quality, file size and
  metadata chunks), on the files as stored and, for a chain that rescales and re-encodes training windows, on
  what the model actually sees (those windows, encoded as they reach it);
- the content probe: the same backbone and head trained, on the same splits, on 32 px thumbnails, which
  keep what a picture shows and destroy the pixel-level traces of how it was made.
A photo detector that does no better than its content probe has learned what the pictures show.
The content probe is trained and evaluated as any detector is (synthgap.detect.train.content_probe).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

CONTENT_SIZE = 32  # px: a thumbnail keeps the subject, not a generator's high-frequency trace


def probe_config(cfg):
    """The content probe's config: the detector's backbone (all of its blocks) and head, on CONTENT_SIZE px thumbnails."""
    return dataclasses.replace(
        cfg,
        input="resize",
        image_size=CONTENT_SIZE,
        input_size=None,
        feature_blocks=None,  # the whole backbone: the strongest reader of content the recipe's network has
        head_per_block=False,
        finetune_blocks=0,
        cache_features=True,
        normalize_format=False,
    )


def seen_metadata(train, chain, *, seed: int = 0, per_side: int = 300) -> dict | None:
    """The format-bias audit of what the model sees: one training window per image (a seeded sample per side),
    encoded as it reaches the model (JPEG at its drawn quality). None for a chain that re-encodes nothing."""
    from synthgap.detect.audit import audit_format_bias, metadata_of_bytes
    from synthgap.detect.crops import CropViews
    from synthgap.train.robust import jpeg_bytes

    if not (chain.augments and chain.jpeg_quality and train.files):
        return None
    rng = np.random.default_rng(seed)
    y = train.labels.numpy()
    views = CropViews(train.files, chain)
    draws = chain.draws(2 * per_side, torch.Generator().manual_seed(seed))
    metas: dict[int, list[dict]] = {0: [], 1: []}
    for label in (0, 1):
        idx = np.unique(np.flatnonzero(y == label))  # training repeats small sources: each file once
        for k, i in enumerate(rng.choice(idx, min(per_side, len(idx)), replace=False)):
            u = draws[label * per_side + k]
            metas[label].append(metadata_of_bytes(jpeg_bytes(views[(int(i), *u)], int(u[3]))))
    result = audit_format_bias(metas[0], metas[1], seed=seed)
    result["on"] = (
        f"training windows as the model sees them (rescaled x{chain.rescale[0]:g}-{chain.rescale[1]:g}, "
        f"re-encoded at JPEG q{chain.jpeg_quality[0]}-{chain.jpeg_quality[1]})"
        if chain.rescale
        else f"training windows as the model sees them (re-encoded at JPEG q{chain.jpeg_quality[0]}-{chain.jpeg_quality[1]})"
    )
    return result


def probes_record(test: dict, bias: dict, content: dict) -> dict:
    """detector.json's `probes`: the metadata and content probes beside the detector, and one line saying what
    the detector is credited with."""
    seen = bias.get("seen_by_model") or {}
    metadata = {
        "balanced_accuracy": bias.get("balanced_accuracy"),
        "on": bias.get("on"),
        "verdict": bias.get("verdict"),
        **(
            {"seen_balanced_accuracy": seen["balanced_accuracy_without_file_size"], "seen_on": seen.get("on")}
            if seen
            else {}
        ),
    }
    auc = test["auc"]
    if "auc" in content:
        margin = auc - content["auc"]
        against = (
            f"AUC {auc:.3f} against {content['auc']:.3f} from content alone ({content['image_size']} px thumbnails): "
        )
        if margin > 0.05:
            credited = against + f"{margin:+.3f} beyond the content probe."
        elif margin > 0.02:
            credited = against + (
                f"only {margin:+.3f} beyond the content probe: most of what it separates, the pictures' content "
                "separates too."
            )
        else:
            credited = (
                against + "no better than content alone: it has learned what the pictures show, not how they were made."
            )
    else:
        credited = f"AUC {auc:.3f}; content probe not run ({content.get('skipped', 'no reason recorded')})."
    if seen:
        credited += (
            f" Metadata of what the model sees separates the sides at {seen['balanced_accuracy_without_file_size']:.2f}"
            " balanced accuracy (chance 0.50)."
        )
    elif bias.get("balanced_accuracy") is not None:
        credited += f" File metadata alone: {bias['balanced_accuracy']:.2f} balanced accuracy (chance 0.50)."
    return {"metadata": metadata, "content": content, "credited": credited}
