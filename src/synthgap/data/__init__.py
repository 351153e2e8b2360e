"""Real and synthetic image data: sources, decoding, caching, and on-device tensors.

Names load on first use (synthgap.lazy_exports), so that the CLI can read the data specs' help texts
(synthgap.data.spec) without importing torch."""

from synthgap import lazy_exports

_EXPORTS = {
    "decode_files": "synthgap.data.images",
    "decode_image": "synthgap.data.images",
    "resize_square": "synthgap.data.images",
    "to_rgb": "synthgap.data.images",
    "ImageSet": "synthgap.data.sets",
    "concat": "synthgap.data.sets",
    "data_root": "synthgap.data.sets",
    "holdout_split": "synthgap.data.sets",
    "load_cifar10": "synthgap.data.sets",
    "load_class_folders": "synthgap.data.sets",
    "load_manifest": "synthgap.data.sets",
    "load_spec": "synthgap.data.sets",
    "parse_classes": "synthgap.data.sets",
    "prepare_cifar10": "synthgap.data.sets",
    "Spec": "synthgap.data.spec",
    "parse_spec": "synthgap.data.spec",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
