"""What this installation can do: versions, backends and their devices, CUDA, packaged models."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from ._version import __version__


def cuda_info() -> dict[str, Any]:
    from .runtimes.cuda_probe import cuda_status

    devices, reason = cuda_status()
    return {"devices": [{"index": d.index, "name": d.name, "compute_capability": ".".join(map(str, d.compute_capability)),
                         "sm": d.sm} for d in devices],
            "reason": reason or f"{len(devices)} device(s)"}


def info() -> dict[str, Any]:
    from .bundle import DEFAULT_MODEL, Bundle, packaged_models
    from .runtimes import BACKENDS, auto_order, cpu_count, cpu_model, cpu_vendor, probe_all
    from .runtimes.selection import auto_mode

    order, why = auto_order()
    models = {}
    for name in packaged_models():
        try:
            m = Bundle.open(name, verify=False).manifest
            models[name] = ", ".join(sorted(a.format + "/" + a.precision for a in m.artifacts))
        except Exception as e:  # info must report a broken bundle, not crash on it
            models[name] = f"unreadable: {e}"
    backends = {}
    for name, p in probe_all().items():
        backends[name] = {"usable": p.usable, "reason": p.reason, "version": p.version, "devices": list(p.devices),
                          "extra": BACKENDS[name].extra}
        try:
            if p.usable:
                backends[name].update(BACKENDS[name].device_details())
        except Exception as e:  # a device query that fails is reported, not fatal
            backends[name]["device_error"] = f"{type(e).__name__}: {e}"
    return {
        "fer_edge": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": f"{platform.machine()} {cpu_vendor()} {cpu_model()}, {cpu_count()} usable cores",
        "cuda": cuda_info(),
        "backends": backends,
        "auto": "fixed order (FER_EDGE_AUTO=order)" if auto_mode() == "order" else
                "measured: each usable backend timed at first use per bundle, the fastest kept (cached); "
                "FER_EDGE_AUTO=order for the fixed order",
        "auto_order": order,
        "auto_reason": why,
        "default_model": DEFAULT_MODEL,
        "packaged_models": packaged_models(),
        "models": models,
    }
