"""Runtime backends behind one interface, chosen through a registry.

Each backend is a small `Backend` subclass registered by name (`register_backend`); importing
this package registers the built-in ones without importing any runtime (they import lazily).
`select_backend` turns a request ("auto", "fastest" or a name) into a loaded backend: see
`selection.py`.
"""

from __future__ import annotations

from . import onnxruntime as _onnxruntime  # noqa: F401  (registers the backend; imports nothing heavy)
from . import openvino as _openvino  # noqa: F401
from . import tensorrt as _tensorrt  # noqa: F401
from . import ncnn as _ncnn  # noqa: F401
from .base import BACKENDS, Backend, Probe, get_backend, register_backend
from .machine import cpu_count, cpu_model, cpu_vendor
from .selection import Selection, auto_order, probe_all, select_backend, time_backend

__all__ = ["Backend", "Probe", "BACKENDS", "register_backend", "get_backend", "probe_all", "auto_order",
           "select_backend", "Selection", "time_backend", "cpu_vendor", "cpu_model", "cpu_count"]
