"""Training and evaluation: one loop for every classifier, metrics by scikit-learn's definitions.

Imported eagerly, unlike the other stages: `augment` and `evaluate` are both a function and a submodule
here, and a lazy name would turn into the submodule once that is imported."""

from synthgap.device import seed_everything, select_device
from synthgap.train.augment import augment, normalize
from synthgap.train.evaluate import classification_metrics, evaluate, predict_proba
from synthgap.train.loop import FitResult, fit

__all__ = [
    "FitResult",
    "augment",
    "classification_metrics",
    "evaluate",
    "fit",
    "normalize",
    "predict_proba",
    "seed_everything",
    "select_device",
]
