"""synthgap: measure and close the gap between synthetic and real image data."""

__version__ = "0.1.0"

ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class SynthgapError(Exception):
    """A user-facing error: the CLI prints its message, never a traceback."""
