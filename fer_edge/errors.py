"""One exception family. Callers catch FerEdgeError, or the subclass they can act on."""


class FerEdgeError(Exception):
    """Base of every error fer_edge raises on purpose."""


class InputError(FerEdgeError, ValueError):
    """An argument (an image, a batch, an option) is not what the API expects."""


class DataError(FerEdgeError):
    """A dataset on disk is malformed: unreadable images, unknown classes, bad CSV rows."""


class BundleError(FerEdgeError):
    """A bundle is missing, malformed, tampered with, or newer than this code understands."""


class RuntimeUnavailableError(FerEdgeError):
    """The requested backend or device cannot run here; the message names what to install."""


class ExportError(FerEdgeError):
    """A conversion step failed or produced an artifact that does not match its source."""


class AccuracyDropError(ExportError):
    """Quantization cost more accuracy than allowed (pass allow_drop to accept it)."""


class ParityError(FerEdgeError):
    """An artifact's outputs drifted from the golden outputs beyond the manifest's tolerance."""


def install_hint(extra: str) -> str:
    """The command that installs an optional part, as every error that lacks one says it."""
    return f"pip install 'fer-edge[{extra}]'"
