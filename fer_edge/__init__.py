"""fer_edge: facial expression recognition for the edge."""

import os as _os

# In a source checkout without an install, export/ and runtimes/ sit beside this package
# (they install as fer_edge.export and fer_edge.runtimes): let the checkout find them too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(
    _os.path.join(_root, "runtimes", "base.py")
):
    __path__.append(_root)  # type: ignore[name-defined]

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
