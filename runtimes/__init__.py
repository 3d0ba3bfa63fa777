"""Runtime backends behind one interface, chosen through a registry.

Each backend is a small `Backend` subclass registered by name (`register_backend`); importing
this package registers the backend of every row of `fer_edge.formats.FORMATS` without importing
any runtime (they import lazily).
`select_backend` turns a request ("auto", "fastest" or a name) into a loaded backend: see
`selection.py`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .. import errors
from ..formats import FORMATS


def check_checkout(subpackage_file: str) -> None:
    """Refuse a fer_edge assembled from two checkouts. Packaging maps runtimes/ and export/ into
    fer_edge; with a checkout's fer_edge/ first on PYTHONPATH and another checkout installed
    editable, these would silently come from the other one."""
    root = Path(subpackage_file).resolve().parent.parent
    core = Path(errors.__file__).resolve().parent
    if (root / "pyproject.toml").is_file() and core != root / "fer_edge":
        sub = Path(subpackage_file).parent.name
        raise ImportError(f"fer_edge comes from {core.parent} but fer_edge.{sub} from {root}: two checkouts "
                          f"mixed (PYTHONPATH over an editable install of another checkout?). Install the "
                          f"checkout you run: pip install -e {core.parent} (tools/checkout_venv.sh makes a "
                          "venv for it on top of an existing one)")


check_checkout(__file__)

from .base import BACKENDS, Backend, Probe, get_backend, register_backend
from .machine import cpu_count, cpu_model, cpu_vendor
from .selection import Selection, auto_order, probe_all, select_backend, time_backend

# Each format row names its backend's module (runtimes/<backend>.py); importing it registers the
# backend and imports nothing heavy.
for _format in FORMATS.values():
    import_module(f"{__name__}.{_format.backend}")

__all__ = ["Backend", "Probe", "BACKENDS", "register_backend", "get_backend", "probe_all", "auto_order",
           "select_backend", "Selection", "time_backend", "cpu_vendor", "cpu_model", "cpu_count"]
