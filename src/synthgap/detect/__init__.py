"""Real vs AI-generated: transfer-learning detectors, their evaluation, search and bundle."""
from synthgap.detect.compare import compare_backbones
from synthgap.detect.data import load_detector_data
from synthgap.detect.model import DetectorBundle, build_detector, load_bundle
from synthgap.detect.train import run_detector, train_detector
from synthgap.detect.tune import tune_detector

__all__ = ["DetectorBundle", "build_detector", "compare_backbones", "load_bundle", "load_detector_data", "run_detector",
           "train_detector", "tune_detector"]
