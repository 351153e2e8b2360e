"""Experiments built on the core: the synthetic-vs-real transfer study and the pipeline.

Names load on first use (synthgap.lazy_exports)."""

from synthgap import lazy_exports

_EXPORTS = {
    "plan_training_sets": "synthgap.experiments.transfer",
    "run_transfer": "synthgap.experiments.transfer",
    "stratified_sample": "synthgap.experiments.transfer",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
