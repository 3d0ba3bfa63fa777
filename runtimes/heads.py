"""Heads at run time: a backbone's embedding (or its logits) -> class probabilities.

`load_head(bundle, head)` builds the head a manifest describes (docs/architecture.md, "Heads at
run time"): `in_graph` (softmax of the graph's logits), `linear` (numpy on an .npz) or
`xgboost` (the compiled tree library through ctypes). A named head that cannot load raises; it
never falls back to another head.
"""

from __future__ import annotations

import abc
import ctypes
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..calibration import apply_temperature, check_temperature
from ..errors import BundleError, FerEdgeError, InputError
from ..probabilities import softmax
from .head_build import ABI, build_library, cached_library, platform_tag

__all__ = [
    "HEADS",
    "CompiledTreeHead",
    "Head",
    "InGraphHead",
    "LinearHead",
    "TreeLibrary",
    "build_head",
    "load_head",
    "register_head",
    "softmax",
]


def _matrix(x: Any, width: int, what: str, *, allow_nan: bool = False) -> np.ndarray:
    """x as a C-contiguous float32 (N, width) array, or InputError saying what is wrong.

    allow_nan: the tree head takes NaN as a missing value and +-inf as a value, as XGBoost does."""
    if x is None:
        raise InputError(f"{what} is required: a (N, {width}) float array")
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric; got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != width:
        raise InputError(f"{what} must have shape (N, {width}); got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not allow_nan and not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise InputError(f"{what} holds non-finite values (first in row {row}); the head needs finite numbers")
    return a


class Head(abc.ABC):
    """embedding (N, F) and logits (N, C) of the backbone -> probabilities (N, C), float32.

    Instances are immutable after construction and may be called from many threads.
    """

    kind: ClassVar[str]
    num_classes: int

    @classmethod
    @abc.abstractmethod
    def from_manifest(cls, bundle, name: str, entry: dict[str, Any], *, threads: int | None = None) -> Head: ...

    @abc.abstractmethod
    def __call__(self, embedding: np.ndarray | None, logits: np.ndarray | None = None) -> np.ndarray: ...

    def probabilities(self, embedding: np.ndarray | None, logits: np.ndarray | None = None,
                      temperature: float = 1.0) -> np.ndarray:
        """The head's probabilities at a temperature: softmax(log p / T) (fer_edge.calibration).
        Heads that compute scores override it with softmax(scores / T), the same up to rounding
        and one pass of numpy cheaper on the one-crop path."""
        return apply_temperature(self(embedding, logits), temperature)

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...


def _softmax_at(scores: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return softmax(scores)
    return softmax(scores / np.float32(check_temperature(temperature)))


HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    """Class decorator: make a head kind loadable from manifests (third-party heads too)."""
    HEADS[cls.kind] = cls
    return cls


def _check_against_backbone(bundle, name: str, entry: dict[str, Any]) -> tuple[int, int]:
    """The entry's (num_features, num_classes), refused unless they fit the backbone and labels."""
    m = bundle.manifest
    try:
        nf, nc = int(entry["num_features"]), int(entry["num_classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"bundle {m.name!r}: head {name!r} needs integer num_features and num_classes") from e
    feature_dim = m.model.get("feature_dim")
    if feature_dim is not None and nf != int(feature_dim):
        raise BundleError(f"bundle {m.name!r}: head {name!r} takes {nf} features but the backbone's embedding "
                          f"has {feature_dim} (model.feature_dim)")
    if nc != len(m.labels):
        raise BundleError(f"bundle {m.name!r}: head {name!r} has {nc} classes but the bundle has {len(m.labels)} labels")
    return nf, nc


@register_head
class InGraphHead(Head):
    """Softmax of the logits the backbone graph computes itself."""

    kind = "in_graph"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)

    @classmethod
    def from_manifest(cls, bundle, name: str, entry: dict[str, Any], *, threads: int | None = None) -> InGraphHead:
        return cls(len(bundle.manifest.labels))

    def __call__(self, embedding: np.ndarray | None, logits: np.ndarray | None = None) -> np.ndarray:
        return self.probabilities(embedding, logits)

    def probabilities(self, embedding: np.ndarray | None, logits: np.ndarray | None = None,
                      temperature: float = 1.0) -> np.ndarray:
        return _softmax_at(_matrix(logits, self.num_classes, "logits"), temperature)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": "in_graph", "num_classes": self.num_classes}


@register_head
class LinearHead(Head):
    """softmax(embedding @ weight.T + bias) in numpy; weight (C, F) and bias (C) from an .npz."""

    kind = "linear"

    def __init__(self, weight: np.ndarray, bias: np.ndarray, *, name: str = "linear") -> None:
        weight, bias = np.asarray(weight), np.asarray(bias)
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise InputError(f"linear head needs weight (C, F) and bias (C,); got {weight.shape} and {bias.shape}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise InputError("linear head weights hold non-finite values")
        self.weight_t = np.ascontiguousarray(weight.T, dtype=np.float32)
        self.bias = bias.astype(np.float32)
        self.num_classes, self.num_features = weight.shape
        self.name = name

    @classmethod
    def from_manifest(cls, bundle, name: str, entry: dict[str, Any], *, threads: int | None = None) -> LinearHead:
        nf, nc = _check_against_backbone(bundle, name, entry)
        rel = entry.get("weights")
        if not rel:
            raise BundleError(f"bundle {bundle.name!r}: linear head {name!r} names no 'weights' file")
        try:
            with np.load(bundle.file(rel), allow_pickle=False) as z:
                weight, bias = z["weight"], z["bias"]
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"bundle {bundle.name!r}: {rel} is not an .npz with 'weight' and 'bias': {e}") from e
        if weight.shape != (nc, nf) or bias.shape != (nc,):
            raise BundleError(f"bundle {bundle.name!r}: {rel} holds weight {weight.shape} and bias {bias.shape}; "
                              f"the manifest says ({nc}, {nf}) and ({nc},)")
        return cls(weight, bias, name=name)

    def __call__(self, embedding: np.ndarray | None, logits: np.ndarray | None = None) -> np.ndarray:
        return self.probabilities(embedding)

    def probabilities(self, embedding: np.ndarray | None, logits: np.ndarray | None = None,
                      temperature: float = 1.0) -> np.ndarray:
        x = _matrix(embedding, self.num_features, "embedding")
        return _softmax_at(x @ self.weight_t + self.bias, temperature)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "num_features": self.num_features,
                "num_classes": self.num_classes}


_FLOAT_P = ctypes.POINTER(ctypes.c_float)


class TreeLibrary:
    """A loaded libfer_head: the checked ctypes surface of native/fer_head.h. Stateless and
    thread-safe; ctypes releases the GIL during fer_head_predict, so threads run in parallel."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise BundleError(f"cannot load the compiled head {self.path}: {e}. It may be built for another "
                              f"platform than {platform_tag()}; rebuild it here with `fer-edge build-head BUNDLE`") from e
        try:
            for fn in ("fer_head_abi_version", "fer_head_num_features", "fer_head_num_classes"):
                getattr(lib, fn).restype = ctypes.c_int
                getattr(lib, fn).argtypes = []
            lib.fer_head_predict.restype = ctypes.c_int
            lib.fer_head_predict.argtypes = [_FLOAT_P, ctypes.c_int, ctypes.c_int, _FLOAT_P]
            lib.fer_head_strerror.restype = ctypes.c_char_p
            lib.fer_head_strerror.argtypes = [ctypes.c_int]
        except AttributeError as e:
            raise BundleError(f"{self.path} does not export the fer_head C ABI ({e}); not a fer_edge head library") from e
        self._lib = lib
        self.abi = lib.fer_head_abi_version()
        if self.abi != ABI:
            raise BundleError(f"{self.path}: fer_head ABI {self.abi}, this fer_edge speaks ABI {ABI}; rebuild the "
                              "library from the bundle's sources with `fer-edge build-head BUNDLE`")
        self.num_features = lib.fer_head_num_features()
        self.num_classes = lib.fer_head_num_classes()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """rows: C-contiguous float32 (N, num_features) -> (N, num_classes) probabilities."""
        if rows.dtype != np.float32 or not rows.flags.c_contiguous or rows.ndim != 2:
            raise InputError("TreeLibrary.predict needs a C-contiguous float32 2-D array")
        n = rows.shape[0]
        out = np.empty((n, self.num_classes), dtype=np.float32)
        rc = self._lib.fer_head_predict(rows.ctypes.data_as(_FLOAT_P), n, rows.shape[1], out.ctypes.data_as(_FLOAT_P))
        if rc != 0:
            msg = self._lib.fer_head_strerror(rc) or b"?"
            raise FerEdgeError(f"fer_head_predict ({self.path.name}) failed with code {rc}: {msg.decode()}")
        return out


@register_head
class CompiledTreeHead(Head):
    """The XGBoost head compiled to C by TL2cgen, called through ctypes.

    `threads` > 1 splits large batches across that many threads (the C code is single-threaded
    and thread-safe); None or 1 runs each call on the calling thread.
    """

    kind = "xgboost"

    def __init__(self, library: str | os.PathLike, *, num_features: int, num_classes: int,
                 threads: int | None = None, name: str = "xgboost") -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None; got {threads!r}")
        self.lib = TreeLibrary(library)
        if (self.lib.num_features, self.lib.num_classes) != (num_features, num_classes):
            raise BundleError(f"compiled head {self.lib.path} has {self.lib.num_features} features and "
                              f"{self.lib.num_classes} classes; the manifest says {num_features} features and "
                              f"{num_classes} classes")
        self.num_features, self.num_classes = num_features, num_classes
        self.threads = threads or 1
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_manifest(cls, bundle, name: str, entry: dict[str, Any], *,
                      threads: int | None = None) -> CompiledTreeHead:
        nf, nc = _check_against_backbone(bundle, name, entry)
        if entry.get("abi") != ABI:
            raise BundleError(f"bundle {bundle.name!r}: head {name!r} has ABI {entry.get('abi')!r}; this fer_edge "
                              f"speaks ABI {ABI}")
        return cls(_library_for_here(bundle, name, entry), num_features=nf, num_classes=nc, threads=threads,
                   name=name)

    def __call__(self, embedding: np.ndarray | None, logits: np.ndarray | None = None) -> np.ndarray:
        x = _matrix(embedding, self.num_features, "embedding", allow_nan=True)
        n = x.shape[0]
        if self.threads == 1 or n < 2 * self.threads:
            return self.lib.predict(x)
        bounds = np.linspace(0, n, self.threads + 1).astype(int)
        parts = self._executor().map(self.lib.predict, [x[a:b] for a, b in itertools.pairwise(bounds)])
        return np.concatenate(list(parts))

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fer_head")
            return self._pool

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "num_features": self.num_features,
                "num_classes": self.num_classes, "library": str(self.lib.path), "platform": platform_tag(),
                "abi": self.lib.abi, "threads": self.threads}


def _library_for_here(bundle, name: str, entry: dict[str, Any]) -> Path:
    """The bundle's library for this platform, else one built from its sources into the cache."""
    tag = platform_tag()
    libraries = entry.get("libraries") or {}
    rel = libraries.get(tag)
    if rel:
        if rel not in bundle.manifest.files:
            raise BundleError(f"bundle {bundle.name!r}: head {name!r} library {rel!r} is not listed in files")
        return bundle.file(rel)
    src = bundle.file(entry["sources"]) if entry.get("sources") else None
    cached = cached_library(src) if src is not None and src.is_dir() else None
    if cached is not None:
        return cached
    how = (f"build it here with: fer-edge build-head {bundle.source} --head {name}" if src is not None
           else "and ships no sources to build one from")
    raise BundleError(f"bundle {bundle.name!r}: head {name!r} has no compiled library for {tag} "
                      f"(it has: {sorted(libraries) or 'none'}); {how}")


def _open(bundle):
    from ..bundle import Bundle

    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def load_head(bundle, head: str = "auto", *, threads: int | None = None) -> Head:
    """The head `head` of a bundle (a Bundle or a path): "auto" is the manifest's default head,
    "in_graph" the graph's own logits, any other name a key of the manifest's `heads`."""
    bundle = _open(bundle)
    m = bundle.manifest
    if head == "auto":
        kind = m.head.get("kind")
        if kind == "in_graph":
            head = "in_graph"
        else:
            head = m.head.get("name")
            if not head or head not in m.heads or m.heads[head].get("kind") != kind:
                raise BundleError(f"bundle {m.name!r}: default head {m.head} does not name a {kind!r} entry of heads "
                                  f"(heads: {sorted(m.heads)})")
    if head == "in_graph":
        return InGraphHead(len(m.labels))
    entry = m.heads.get(head)
    if entry is None:
        raise BundleError(f"bundle {m.name!r} has no head {head!r}; it has: {', '.join(['in_graph', *m.heads])}")
    cls = HEADS.get(entry.get("kind"))
    if cls is None:
        raise BundleError(f"bundle {m.name!r}: head {head!r} is of kind {entry.get('kind')!r}, which this fer_edge "
                          f"cannot run; known kinds: {sorted(HEADS)}")
    return cls.from_manifest(bundle, head, entry, threads=threads)


def build_head(bundle, head: str = "xgboost", *, cache_dir: str | os.PathLike | None = None,
               jobs: int | None = None) -> Path:
    """Build a bundle's compiled head for this machine from the C sources it ships (CMake, cached by
    the sources' hash), check the library against the manifest, and return its path. `load_head`
    finds it in the cache afterwards. Needs cmake and a C99 compiler."""
    bundle = _open(bundle)
    entry = bundle.manifest.heads.get(head)
    if entry is None or not entry.get("sources"):
        have = [n for n, e in bundle.manifest.heads.items() if e.get("sources")]
        raise BundleError(f"bundle {bundle.name!r} has no compiled head {head!r} with sources; it has: {have or 'none'}")
    nf, nc = _check_against_backbone(bundle, head, entry)
    src = bundle.file(entry["sources"])
    if not src.is_dir():
        raise BundleError(f"bundle {bundle.name!r}: head {head!r} sources {entry['sources']!r} is not a folder")
    path = build_library(src, cache_dir=cache_dir, jobs=jobs)
    CompiledTreeHead(path, num_features=nf, num_classes=nc, name=head)  # refuses a library that disagrees
    return path
