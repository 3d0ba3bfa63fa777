"""Runtime backends behind one interface, chosen through a registry.

`select_backend` implements `backend="auto"`: among the backends whose format the bundle
holds, try them in this machine's preference order, load the first that really works, and
record why each other one was passed over.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError, FerEdgeError, InputError, RuntimeUnavailableError
from ..formats import FORMATS
from .base import BACKENDS, Backend, Probe, get_backend, register_backend
from . import onnxruntime as _onnxruntime  # noqa: F401  (registers the backend; imports nothing heavy)
from . import openvino as _openvino  # noqa: F401

__all__ = ["Backend", "Probe", "BACKENDS", "register_backend", "get_backend", "probe_all", "auto_order",
           "select_backend", "Selection"]

log = logging.getLogger("fer_edge")


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def probe_all() -> dict[str, Probe]:
    return {name: cls.probe() for name, cls in BACKENDS.items()}


def auto_order() -> tuple[list[str], str]:
    """Preference order for `auto` on this machine, and why.

    GPU backends first; then OpenVINO before ONNX Runtime on Intel CPUs (its home turf),
    ONNX Runtime first elsewhere (measured faster at batch 1 on AMD here: docs/benchmarks.md).
    """
    order = [n for n, c in BACKENDS.items() if FORMATS[c.format].needs_gpu]
    if cpu_vendor() == "GenuineIntel":
        order += ["openvino", "onnxruntime"]
        why = "Intel CPU: openvino before onnxruntime"
    else:
        order += ["onnxruntime", "openvino"]
        why = f"{cpu_vendor()} CPU: onnxruntime before openvino"
    order += [n for n in BACKENDS if n not in order]
    return order, why


@dataclass
class Selection:
    backend: Backend
    name: str
    precision: str
    path: Path
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)


def _pick_precision(bundle, fmt: str, precision: str) -> str:
    have = [a.precision for a in bundle.manifest.artifacts if a.format == fmt]
    if not have:
        raise BundleError(f"bundle {bundle.name!r} has no {fmt} artifact")
    if precision == "auto":
        # Fastest first, but never an artifact that was shipped past a failed accuracy gate
        # (export with allow_drop): auto must not trade accuracy silently.
        gate = bundle.manifest.evaluation.get("accuracy_gate") or {}
        failed = {k for k, drop in (gate.get("drops_pp") or {}).items() if drop > gate.get("max_drop_pp", 0.5)}
        for p in ("int8", "fp16", "fp32"):
            if p in have and f"{fmt}/{p}" not in failed and not (p == "fp16" and not FORMATS[fmt].needs_gpu):
                return p
        return have[0]
    if precision not in have:
        raise BundleError(f"bundle {bundle.name!r} has no {fmt} {precision} artifact; it has {have}")
    return precision


def _load(bundle, name: str, precision: str, threads: int | None, device: str | None) -> Selection:
    cls = get_backend(name)
    prec = _pick_precision(bundle, cls.format, precision)
    art = bundle.manifest.artifact(cls.format, prec)
    path = bundle.artifact_path(art)
    outputs = tuple(bundle.manifest.model["outputs"].values())
    backend = cls(path, input_name=bundle.manifest.input.input_name, output_names=outputs, threads=threads,
                  device=device)
    return Selection(backend, name, prec, path, reason="")


def select_backend(bundle, backend: str = "auto", *, precision: str = "auto", threads: int | None = None,
                   device: str | None = None, strict: bool = False) -> Selection:
    if backend != "auto":
        cls = get_backend(backend)
        probe = cls.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(
                f"backend {backend!r} is not usable here: {probe.reason}. "
                f"Install it with: pip install 'fer-edge[{cls.extra}]'"
            )
        sel = _load(bundle, backend, precision, threads, device)
        sel.reason = f"requested explicitly ({probe.reason})"
        return sel
    if strict:
        raise InputError("strict=True needs an explicit backend, not 'auto'")
    order, why = auto_order()
    formats = {a.format for a in bundle.manifest.artifacts}
    skipped: dict[str, str] = {}
    for name in order:
        cls = BACKENDS[name]
        if cls.format not in formats:
            skipped[name] = f"bundle has no {cls.format} artifact"
            continue
        probe = cls.probe()
        if not probe.usable:
            skipped[name] = probe.reason
            continue
        try:
            sel = _load(bundle, name, precision, threads, device)
        except FerEdgeError as e:  # imports but cannot run this artifact here
            skipped[name] = f"failed to load: {e}"
            continue
        sel.reason = f"auto: first usable in preference order {order} ({why})"
        sel.skipped = skipped
        log.info("fer_edge: backend %s (%s) chosen for %s; skipped: %s", name, sel.precision, bundle.name,
                 skipped or "none")
        return sel
    extras = sorted({BACKENDS[n].extra for n in order if BACKENDS[n].format in formats})
    details = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    raise RuntimeUnavailableError(
        f"no backend can run bundle {bundle.name!r} here ({details}). "
        f"Install one of: " + ", ".join(f"pip install 'fer-edge[{e}]'" for e in extras)
    )
