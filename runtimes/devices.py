"""One device vocabulary and one default for every backend (and for `build-engine`).

Words, case-insensitive, the same for `Recognizer(device=...)`, `predict --device` and
`build-engine --device`:
  None       the default, one rule for all backends: a CUDA GPU where the backend can really use
             one here (onnxruntime with its CUDA provider and a device that opens; TensorRT, which
             has nothing else), else the CPU (OpenVINO has no CUDA device, so it runs on the CPU)
  "cpu"      the CPU
  "cuda[:N]" the N-th CUDA GPU (N = 0 when left out); "gpu[:N]" says the same to onnxruntime and
             TensorRT, and names OpenVINO's own GPU plugin ("GPU.N") to OpenVINO
  N          an integer alone means "cuda:N" (what `build-engine --device 1` used to take)
A backend's own device names pass through to it unchanged: onnxruntime "tensorrt[:N]" (its
TensorRT provider), OpenVINO "NPU", "AUTO", "HETERO:...", "GPU.1".
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InputError

DEFAULT_DEVICE = None
COMMON = ("cpu", "cuda", "gpu")


class Device(NamedTuple):
    kind: str  # "cpu", "cuda", "gpu", or a backend's own name (lower case)
    index: int | None  # None: not given
    text: str  # as the caller wrote it (for a backend's own names, whose case may matter)


def parse_device(device: str | int | None) -> Device | None:
    """None for the default; else the device in the shared vocabulary (see the module docstring)."""
    if device is None:
        return None
    if isinstance(device, bool):
        raise InputError(f"device must be a string such as 'cpu' or 'cuda:0', or None, got {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise InputError(f"a device index must be >= 0, got {device}")
        return Device("cuda", device, f"cuda:{device}")
    text = str(device).strip()
    if text.isdigit():
        return Device("cuda", int(text), f"cuda:{text}")
    kind, sep, index = text.lower().partition(":")
    if kind in COMMON:
        if sep and not index.isdigit():
            raise InputError(f"device {device!r}: the part after ':' must be a device index (e.g. 'cuda:1')")
        return Device(kind, int(index) if sep else None, text)
    if not text:
        raise InputError("device is an empty string; use None for the default, 'cpu' or 'cuda[:N]'")
    return Device(kind, int(index) if sep and index.isdigit() else None, text)


def cuda_index(device: str | int | None, *, backend: str) -> int:
    """The CUDA GPU index for a backend that only runs on CUDA GPUs (TensorRT, engine builds)."""
    d = parse_device(device)
    if d is None:
        return 0
    if d.kind not in ("cuda", "gpu"):
        raise InputError(f"{backend} runs on CUDA GPUs only: device must be 'cuda[:N]' (or 'gpu[:N]', or N), "
                         f"got {device!r}")
    return d.index or 0
