"""What this installation can do: versions, backends, devices, packaged models."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from ._version import __version__


def info() -> dict[str, Any]:
    from .bundle import DEFAULT_MODEL, Bundle, packaged_models
    from .runtimes import BACKENDS, auto_order, cpu_vendor, probe_all

    order, why = auto_order()
    models = {}
    for name in packaged_models():
        try:
            m = Bundle.open(name, verify=False).manifest
            models[name] = ", ".join(sorted(a.format + "/" + a.precision for a in m.artifacts))
        except Exception as e:  # info must report a broken bundle, not crash on it
            models[name] = f"unreadable: {e}"
    return {
        "fer_edge": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": f"{platform.machine()} {cpu_vendor()}",
        "backends": {
            name: {"usable": p.usable, "reason": p.reason, "version": p.version, "devices": list(p.devices),
                   "extra": BACKENDS[name].extra}
            for name, p in probe_all().items()
        },
        "auto_order": order,
        "auto_reason": why,
        "default_model": DEFAULT_MODEL,
        "packaged_models": packaged_models(),
        "models": models,
    }
