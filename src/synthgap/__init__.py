"""synthgap: measure and close the gap between synthetic and real image data."""

__version__ = "0.1.0"

ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class SynthgapError(Exception):
    """A user-facing error: the CLI prints its message, never a traceback."""


def lazy_exports(package: str, exports: dict[str, str]):
    """A package's module `__getattr__` (PEP 562) that imports each name from its module on first use, so
    that importing one stage's config or one function does not load torch and the rest of the stage."""
    import importlib

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
