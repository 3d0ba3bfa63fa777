"""OpenVINO backend (CPU; other OpenVINO devices by name: GPU, NPU, AUTO)."""

from __future__ import annotations

import importlib
import queue
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, RuntimeUnavailableError
from .base import Backend, Probe, register_backend

_CORE = None


def _core():
    # OpenVINO recommends one Core per process.
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


@register_backend
class OpenVinoBackend(Backend):
    name = "openvino"
    format = "openvino"
    extra = "openvino"
    module = "openvino"

    @classmethod
    def probe(cls) -> Probe:
        try:
            ov = importlib.import_module("openvino")
            devices = tuple(_core().available_devices)
        except Exception as e:
            return Probe(False, f"cannot use openvino: {e}")
        if not devices:
            return Probe(False, f"openvino {ov.__version__} sees no device", ov.__version__)
        return Probe(True, f"openvino {ov.__version__} with devices {', '.join(devices)}", ov.__version__, devices)

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: pip install 'fer-edge[{self.extra}]'")
        device = (device or "CPU").upper()
        if device != "AUTO" and device.split(".")[0] not in {d.split(".")[0] for d in probe.devices}:
            raise RuntimeUnavailableError(f"openvino device {device!r} not available; devices here: {probe.devices}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and device == "CPU":
            config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1)
        try:
            self.compiled = _core().compile_model(str(path), device, config)
        except Exception as e:
            raise BundleError(f"openvino cannot load {path} on {device}: {e}") from e
        inputs = [n for i in self.compiled.inputs for n in i.get_names()]
        outputs = {n for o in self.compiled.outputs for n in o.get_names()}
        if input_name not in inputs or not set(output_names) <= outputs:
            raise BundleError(
                f"{path}: model has inputs {inputs} and outputs {sorted(outputs)}; manifest expects input "
                f"{input_name!r} and outputs {list(output_names)}"
            )
        self.input_name, self.output_names = input_name, tuple(output_names)
        self.ports = [self.compiled.output(n) for n in output_names]
        self.device, self.threads, self.version = device, threads, probe.version
        # An InferRequest is not thread-safe: keep a pool, one request per concurrent caller.
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({self.input_name: batch})
            return {n: np.array(result[p]) for n, p in zip(self.output_names, self.ports)}
        finally:
            self._requests.put(request)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version, "device": self.device,
                "threads": self.threads or "default"}
