"""Training and evaluation: one loop for every classifier, metrics by scikit-learn's definitions."""
from synthgap.train.augment import augment, normalize
from synthgap.train.evaluate import classification_metrics, evaluate, predict_proba
from synthgap.train.loop import FitResult, fit, seed_everything, select_device

__all__ = ["FitResult", "augment", "classification_metrics", "evaluate", "fit", "normalize", "predict_proba",
           "seed_everything", "select_device"]
