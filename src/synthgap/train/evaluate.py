"""Predictions and classification metrics (scikit-learn's definitions)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from synthgap.train.augment import normalize


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 512, tta: bool = True,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Class probabilities for uint8 images (N x 3 x H x W); TTA averages with the mirror image."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device)).contiguous(memory_format=torch.channels_last)
        logits = model(x)
        if tta:
            logits = 0.5 * (logits + model(x.flip(3)))
        out.append(logits.float().softmax(1).cpu())
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
