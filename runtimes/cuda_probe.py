"""Is TensorRT really usable here? One honest answer shared by the exporter and the runtime.

"import tensorrt worked" proves nothing: the lean runtime imports and even builds a Runtime on
a machine without a GPU (platform-facts section 7). So the CUDA driver is asked too, through
ctypes on libcuda (no torch, no cuda-python needed): cuInit, cuDeviceGetCount, and per device
its name and compute capability.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import NamedTuple

from ..errors import install_hint
from .base import Probe

# CUdevice_attribute values from cuda.h (stable since CUDA 2.x).
_CC_MAJOR, _CC_MINOR = 75, 76
_LIBCUDA = ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib")


class CudaDevice(NamedTuple):
    """(index, name, compute_capability), unpackable as a tuple."""

    index: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        """'sm_87' for a Jetson Orin, 'sm_90' for an H100: the key engines are stored under."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def _libcuda() -> tuple[ctypes.CDLL | None, str]:
    errors = []
    for name in _LIBCUDA:
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            errors.append(f"{name}: {e}")
    return None, "no CUDA driver library (" + "; ".join(errors[:2]) + ")"


def cuda_status() -> tuple[list[CudaDevice], str]:
    """(devices, reason when there are none). Every driver call is checked."""
    lib, where = _libcuda()
    if lib is None:
        return [], where
    rc = lib.cuInit(0)
    if rc != 0:
        # 100 = CUDA_ERROR_NO_DEVICE, 35 = driver older than the runtime / no usable GPU.
        return [], f"cuInit failed with CUDA error {rc} ({where})"
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return [], f"cuDeviceGetCount failed with CUDA error {rc}"
    if count.value <= 0:
        return [], "the CUDA driver reports no devices"
    devices = []
    for i in range(count.value):
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        if lib.cuDeviceGetName(name, len(name), dev) != 0:
            name.value = b"unknown"
        if (lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev) != 0
                or lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev) != 0):
            continue
        devices.append(CudaDevice(i, name.value.decode(errors="replace"), (major.value, minor.value)))
    if not devices:
        return [], f"the driver lists {count.value} device(s) but none answered its attribute queries"
    return devices, ""


def cuda_devices() -> list[CudaDevice]:
    """CUDA devices the driver can really open (empty without a driver or a GPU)."""
    return cuda_status()[0]


def import_tensorrt(*, builder: bool = False):
    """(module, reason). `builder` asks for the full package (builder + ONNX parser), not the
    lean runtime, which can only deserialize version-compatible engines."""
    errors = []
    for name in ("tensorrt",) if builder else ("tensorrt", "tensorrt_lean"):
        try:
            return importlib.import_module(name), name
        except Exception as e:  # ImportError, or OSError from a missing libnvinfer / libnvonnxparser
            errors.append(f"cannot import {name} ({type(e).__name__}: {str(e)[:160]})")
    return None, "; ".join(errors)


def probe_tensorrt(*, builder: bool = False) -> Probe:
    """Usable only if TensorRT imports *and* the CUDA driver opens at least one device."""
    trt, why = import_tensorrt(builder=builder)
    if trt is None:
        return Probe(False, why + f"; {install_hint('tensorrt')} (or JetPack's python3-libnvinfer on a Jetson)")
    version = getattr(trt, "__version__", "?")
    devices, reason = cuda_status()
    if not devices:
        return Probe(False, f"{why} {version} importable but no CUDA device: {reason}", version)
    if builder and not hasattr(trt, "OnnxParser"):
        return Probe(False, f"{why} {version} has no ONNX parser (a lean/dispatch runtime cannot build engines)",
                     version)
    names = tuple(f"cuda:{d.index} {d.name} ({d.sm})" for d in devices)
    return Probe(True, f"{why} {version} with {', '.join(names)}", version, names)
