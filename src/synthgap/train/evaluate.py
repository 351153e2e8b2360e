"""Predictions and classification metrics (scikit-learn's definitions)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from synthgap.train.augment import augment, normalize
from synthgap.train.config import AugmentConfig
from synthgap.train.robust import robust_augment, uses_robust


def image_input(aug: AugmentConfig):
    """The standard model input: uint8 images, robustness-degraded, normalised, then augmented
    when a generator is given (training); only normalised when it is None (evaluation)."""

    def prepare(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if g is not None and uses_robust(aug):
            x = robust_augment(x, aug, g)
        x = normalize(x)
        if g is not None:
            x = augment(x, aug, g)
        return x.contiguous(memory_format=torch.channels_last)

    return prepare


def loss_fn(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy; a one-logit model is a binary classifier trained with the sigmoid loss."""
    if logits.shape[1] == 1:
        target = y.float() * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), target)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def logits_to_proba(logits: torch.Tensor) -> torch.Tensor:
    """N x C probabilities; one logit l becomes the two columns (1 - sigmoid(l), sigmoid(l))."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = logits[:, 0].sigmoid()
        return torch.stack([1 - p, p], 1)
    return logits.softmax(1)


@torch.no_grad()
def adapt_batchnorm(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """AdaBN (Li et al. 2016): replace every BatchNorm layer's running mean and variance with those of `images`
    (uint8, N x 3 x H x W, unlabelled images of the target domain), the weights untouched. Transductive: it
    uses the target domain's images. Returns the model, in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an exponential one
    model.train()
    prepare = image_input(AugmentConfig())
    for i in range(0, len(images), batch_size):
        model(prepare(images[i : i + batch_size].to(device), None))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


MAX_BATCH_PIXELS = 2**22  # per prediction batch: 4,096 images of 32 x 32, 83 of 224 x 224


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 512,
    tta: bool = True,
    device: torch.device | str = "cpu",
    prepare=None,
) -> torch.Tensor:
    """Class probabilities for uint8 images (N x 3 x H x W); TTA averages the logits with the mirror image.

    prepare(x, None): the model input of a batch (default: normalised images).
    """
    model.eval()
    prepare = prepare or image_input(AugmentConfig())
    if images.ndim == 4:  # memory follows the pixels of a batch: fewer large images at a time
        batch_size = min(batch_size, max(8, MAX_BATCH_PIXELS // (images.shape[-1] * images.shape[-2])))
    out = []
    for i in range(0, len(images), batch_size):
        x = prepare(images[i : i + batch_size].to(device), None)
        logits = model(x)
        if tta:
            logits = 0.5 * (logits + model(x.flip(3)))
        out.append(logits_to_proba(logits).cpu())
    return torch.cat(out) if out else torch.empty(0)


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support, confusion matrix (counts, row-normalised)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f)),
        "per_class": {
            c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, c in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": cm_norm.round(4).tolist(),
    }


def evaluate(model: torch.nn.Module, data, *, tta: bool = True, device="cpu") -> dict:
    """Metrics of `model` on an ImageSet."""
    proba = predict_proba(model, data.images, tta=tta, device=device)
    return classification_metrics(data.labels.numpy(), proba.argmax(1).numpy(), data.classes)
