"""ONNX Runtime backend: CPU, and the CUDA / TensorRT execution providers where they really run.

`device` picks the execution providers: "cpu", "cuda" (or "cuda:N", "gpu[:N]"), "tensorrt" (or
"tensorrt:N"), or None for the shared default of runtimes/devices.py (CUDA when its provider is
installed *and* the driver opens a device, else CPU). ONNX Runtime quietly drops a provider it cannot initialise, so after the
session is made the providers it actually bound are checked against the request.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError, RuntimeUnavailableError, install_hint
from . import devices
from .base import Backend, Probe, register_backend

# device -> the providers to ask for, best first (CPU stays last: ORT runs unsupported nodes there).
DEVICE_PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
PROVIDER_DEVICE = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                   "TensorrtExecutionProvider": "tensorrt"}


def ort_device(device: str | int | None) -> tuple[str | None, int]:
    """'cuda:1' (or 'gpu:1', or 1) -> ('cuda', 1); None -> (None, 0), the shared default
    (runtimes/devices.py). Refuses names ONNX Runtime has no provider for."""
    d = devices.parse_device(device)
    if d is None:
        return None, 0
    kind = "cuda" if d.kind == "gpu" else d.kind
    if kind not in DEVICE_PROVIDERS or (":" in d.text and d.index is None):
        raise InputError(f"onnxruntime device must be one of {sorted(DEVICE_PROVIDERS)} (optionally ':N' for "
                         f"a GPU index; 'gpu' means 'cuda') or None for the default, got {device!r}")
    return kind, d.index or 0


def _cuda_present() -> bool:
    from .cuda_probe import cuda_devices

    return bool(cuda_devices())


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    format = "onnx"

    @classmethod
    def probe(cls) -> Probe:
        try:
            ort = importlib.import_module("onnxruntime")
        except Exception as e:  # ImportError, or a broken native library (OSError)
            return Probe(False, f"cannot import onnxruntime: {e}")
        providers = tuple(ort.get_available_providers())
        if "CPUExecutionProvider" not in providers:
            return Probe(False, f"onnxruntime {ort.__version__} has no CPUExecutionProvider", ort.__version__)
        devices = tuple(d for p, d in PROVIDER_DEVICE.items() if p in providers)
        return Probe(True, f"onnxruntime {ort.__version__} with {', '.join(providers)}", ort.__version__, devices)

    @classmethod
    def preference(cls) -> tuple[int, str]:
        probe = cls.probe()
        if "cuda" in probe.devices and _cuda_present():
            return 1, "onnxruntime with the CUDA provider on a CUDA device"
        return 3, "onnxruntime on the CPU"

    @classmethod
    def device_details(cls) -> dict[str, Any]:
        import onnxruntime as ort

        return {"providers": ort.get_available_providers()}

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        kind, index = ort_device(device)
        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: {install_hint(self.extra)}")
        import onnxruntime as ort

        if kind is None:
            kind = "cuda" if "cuda" in probe.devices and _cuda_present() else "cpu"
        wanted = DEVICE_PROVIDERS[kind]
        missing = [p for p in wanted if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeUnavailableError(
                f"onnxruntime {ort.__version__} has no {', '.join(missing)} (device {device!r}); it has "
                f"{ort.get_available_providers()}. For GPUs install onnxruntime-gpu instead of onnxruntime")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = [(p, {"device_id": index}) if p != "CPUExecutionProvider" else p for p in wanted]
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            raise BundleError(f"onnxruntime cannot load {path} with {list(wanted)}: {e}") from e
        active = self.session.get_providers()
        if wanted[0] not in active:  # listed is not proof: ORT falls back to CPU without raising
            raise RuntimeUnavailableError(
                f"onnxruntime lists {wanted[0]} but could not start it on {kind}:{index} (session runs on "
                f"{active}); check the CUDA/TensorRT libraries and driver, or use device='cpu'")
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if input_name not in inputs or not set(output_names) <= set(outputs):
            raise BundleError(
                f"{path}: graph has inputs {inputs} and outputs {outputs}; manifest expects input "
                f"{input_name!r} and outputs {list(output_names)}"
            )
        self.input_name, self.output_names = input_name, tuple(output_names)
        self.device = kind if kind == "cpu" else f"{kind}:{index}"
        self.threads, self.version = threads, ort.__version__

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe, so one session serves every thread.
        out = self.session.run(list(self.output_names), {self.input_name: batch})
        return dict(zip(self.output_names, out))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version, "device": self.device,
                "providers": self.session.get_providers(), "threads": self.threads or "default"}
