"""Models chosen by name: synthgap.models.registry registers every classifier and backbone on its builder.

Names load on first use (synthgap.lazy_exports), so reading the registry (the CLI's choices) does not load torch."""

from synthgap import lazy_exports

_EXPORTS = {
    "AirNet": "synthgap.models.classifiers",
    "count_parameters": "synthgap.models.classifiers",
    "Backbone": "synthgap.models.backbones",
    "CIFAR_MEAN": "synthgap.models.registry",
    "CIFAR_STD": "synthgap.models.registry",
    "build_backbone": "synthgap.models.registry",
    "build_model": "synthgap.models.registry",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
