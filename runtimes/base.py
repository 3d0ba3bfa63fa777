"""The one interface every backend implements, and the registry that names them."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BundleError, InputError
from ..formats import FORMATS


@dataclass(frozen=True)
class Probe:
    """Whether a backend can really run here, and why (or why not)."""

    usable: bool
    reason: str
    version: str | None = None
    devices: tuple[str, ...] = ()


class Backend(abc.ABC):
    """Runs one backbone artifact: float32 NCHW batch in, named float32 outputs out.

    Subclasses are small: `probe()` says whether the backend can run on this machine (really,
    not just whether its module imports), `__init__` loads an artifact, `run` executes it.
    One instance may be called from many threads.
    """

    name: ClassVar[str]
    format: ClassVar[str]  # the key in fer_edge.formats.FORMATS this backend loads
    extra: ClassVar[str]  # pip extra that installs it: its format row's, unless the class sets its own

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The format row is the one declaration of a built-in backend's extra; a third-party backend
        # of a format fer_edge does not know sets `extra` itself.
        if "extra" not in cls.__dict__ and getattr(cls, "format", None) in FORMATS:
            cls.extra = FORMATS[cls.format].extra

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Probe: ...

    @abc.abstractmethod
    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None: ...

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...

    @classmethod
    def preference(cls) -> tuple[int, str]:
        """Rank for backend='auto' on this machine (lower is tried first) and the reason."""
        return 50, "third-party backend"

    @classmethod
    def device_details(cls) -> dict[str, Any]:
        """Extra facts about the devices for `fer-edge info` (called only when the probe is usable)."""
        return {}

    @classmethod
    def precisions(cls, bundle) -> tuple[str, ...]:
        """Precisions this backend can run from the bundle (what it ships, or can build here)."""
        return tuple(a.precision for a in bundle.manifest.artifacts if a.format == cls.format)

    @classmethod
    def artifact_path(cls, bundle, precision: str, device: str | None) -> Path:
        """The file to load for this precision (a backend whose artifacts are per-device overrides it)."""
        art = bundle.manifest.artifact(cls.format, precision)
        if art is None:
            raise BundleError(f"bundle {bundle.name!r} has no {cls.format} {precision} artifact; "
                              f"it has {list(cls.precisions(bundle))}")
        return bundle.artifact_path(art)


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend available by its name (third-party backends too)."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(
            f"unknown backend {name!r}; known backends: {sorted(BACKENDS)} (or 'auto', 'fastest')") from None
