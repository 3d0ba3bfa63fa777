"""Runtime backends behind one interface, chosen through a registry.

Each backend is a small `Backend` subclass registered by name (`register_backend`); importing
this package registers the backend of every row of `fer_edge.formats.FORMATS` without importing
any runtime (they import lazily).
`select_backend` turns a request ("auto", "fastest" or a name) into a loaded backend: see
`selection.py`.
"""

from __future__ import annotations

from importlib import import_module

from ..formats import FORMATS
from .base import BACKENDS, Backend, Probe, get_backend, register_backend
from .machine import cpu_count, cpu_model, cpu_vendor
from .selection import Selection, auto_order, probe_all, select_backend, time_backend

# Each format row names its backend's module (runtimes/<backend>.py); importing it registers the
# backend and imports nothing heavy.
for _format in FORMATS.values():
    import_module(f"{__name__}.{_format.backend}")

__all__ = ["Backend", "Probe", "BACKENDS", "register_backend", "get_backend", "probe_all", "auto_order",
           "select_backend", "Selection", "time_backend", "cpu_vendor", "cpu_model", "cpu_count"]
