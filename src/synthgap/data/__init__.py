"""Real and synthetic image data: sources, decoding, caching, and on-device tensors."""

from synthgap.data.images import decode_files, decode_image, resize_square, to_rgb
from synthgap.data.sets import (
    ImageSet,
    concat,
    data_root,
    holdout_split,
    load_cifar10,
    load_class_folders,
    load_manifest,
    load_spec,
    parse_classes,
    prepare_cifar10,
)

__all__ = [
    "ImageSet",
    "concat",
    "data_root",
    "decode_files",
    "decode_image",
    "holdout_split",
    "load_cifar10",
    "load_class_folders",
    "load_manifest",
    "load_spec",
    "parse_classes",
    "prepare_cifar10",
    "resize_square",
    "to_rgb",
]
