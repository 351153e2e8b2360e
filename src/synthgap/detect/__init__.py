"""Real vs AI-generated: transfer-learning detectors, their evaluation, search and bundle.

Names load on first use (synthgap.lazy_exports), so `synthgap detect` and the web app, which need only
the bundle, do not import Optuna, the comparison and the training data code at start-up."""

from synthgap import lazy_exports

_EXPORTS = {
    "compare_backbones": "synthgap.detect.compare",
    "load_detector_data": "synthgap.detect.data",
    "DetectorBundle": "synthgap.detect.model",
    "build_detector": "synthgap.detect.model",
    "load_bundle": "synthgap.detect.model",
    "DetectorSet": "synthgap.detect.route",
    "run_detector": "synthgap.detect.train",
    "train_detector": "synthgap.detect.train",
    "tune_detector": "synthgap.detect.tune",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
