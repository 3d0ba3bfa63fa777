"""What machine this is: CPU vendor and model, core count (for ranking and for the selection cache)."""

from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_vendor() -> str:
    """'GenuineIntel', 'AuthenticAMD', ... ('unknown' where /proc/cpuinfo has no vendor, e.g. ARM)."""
    return _cpuinfo().get("vendor_id", "unknown")


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use, not what the box has
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info() -> dict[str, object]:
    """What recorded figures were measured on (INT8 kernels differ between CPUs)."""
    from importlib import metadata

    versions = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_model(), "vendor": cpu_vendor(), "cores": cpu_count(), "arch": platform.machine(), **versions}


def cpu_class() -> str:
    """The CPU class that decides which artifact is fastest (INT8 pays off with VNNI, not with AVX2 alone)."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    if "avx512_vnni" in flags:
        return "x86-64 AVX-512 VNNI"
    if "avx_vnni" in flags:
        return "x86-64 AVX-VNNI"
    if "avx2" in flags:
        return "x86-64 AVX2 (no VNNI)"
    if "asimddp" in flags:
        return f"{platform.machine()} NEON dot-product"
    return platform.machine() or "unknown"
