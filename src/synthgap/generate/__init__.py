"""Generate labelled synthetic image datasets with diffusers text-to-image pipelines.

Names load on first use (synthgap.lazy_exports)."""

from synthgap import lazy_exports

_EXPORTS = {
    "DatasetGenerator": "synthgap.generate.generator",
    "generate": "synthgap.generate.generator",
    "load_pipeline": "synthgap.generate.generator",
    "read_manifest": "synthgap.generate.generator",
    "read_metadata": "synthgap.generate.generator",
    "reproduce": "synthgap.generate.generator",
    "Templates": "synthgap.generate.prompts",
    "derive_seed": "synthgap.generate.prompts",
    "image_seed": "synthgap.generate.prompts",
    "build_tiny_pipeline": "synthgap.generate.tiny",
    "save_tiny_pipeline": "synthgap.generate.tiny",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
