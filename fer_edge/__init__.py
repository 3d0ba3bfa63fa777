"""fer_edge: facial expression recognition for the edge.

`fer_edge.export` and `fer_edge.runtimes` live in the checkout's top-level export/ and runtimes/;
packaging maps them into this package (pyproject.toml `package-dir`; `pip install -e .` for a
checkout), so run a checkout through an install of it, not through PYTHONPATH alone."""

from ._version import __version__
from .errors import (
    AccuracyDropError,
    BundleError,
    DataError,
    ExportError,
    FerEdgeError,
    InputError,
    ParityError,
    RuntimeUnavailableError,
)
from .labels import EMOTIONS


def __getattr__(name: str):
    # Lazy so that `import fer_edge` stays numpy-only and fast.
    if name == "Recognizer":
        from .recognizer import Recognizer

        return Recognizer
    if name == "Prediction":
        from .types import Prediction

        return Prediction
    if name in ("Bundle", "packaged_models"):
        from . import bundle

        return getattr(bundle, name)
    if name == "Manifest":
        from .manifest import Manifest

        return Manifest
    if name == "InputSpec":
        from .preprocess import InputSpec

        return InputSpec
    raise AttributeError(f"module 'fer_edge' has no attribute {name!r}")


__all__ = ["__version__", "Recognizer", "Prediction", "Bundle", "Manifest", "InputSpec", "EMOTIONS",
           "packaged_models", "FerEdgeError", "InputError", "DataError", "BundleError", "RuntimeUnavailableError",
           "ExportError", "AccuracyDropError", "ParityError"]
