"""Generate labelled synthetic image datasets with diffusers text-to-image pipelines."""
from synthgap.generate.generator import DatasetGenerator, generate, load_pipeline, read_manifest, read_metadata, reproduce
from synthgap.generate.prompts import Templates, derive_seed, image_seed
from synthgap.generate.tiny import build_tiny_pipeline, save_tiny_pipeline

__all__ = ["DatasetGenerator", "Templates", "build_tiny_pipeline", "derive_seed", "generate", "image_seed",
           "load_pipeline", "read_manifest", "read_metadata", "reproduce", "save_tiny_pipeline"]
