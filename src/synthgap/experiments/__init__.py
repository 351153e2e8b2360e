"""Experiments built on the core: the synthetic-vs-real transfer study."""
from synthgap.experiments.transfer import plan_training_sets, run_transfer, stratified_sample

__all__ = ["plan_training_sets", "run_transfer", "stratified_sample"]
