"""OpenVINO backend (CPU; other OpenVINO devices by name: GPU, NPU, AUTO)."""

from __future__ import annotations

import importlib
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, RuntimeUnavailableError, install_hint
from . import devices
from .base import Backend, Probe, register_backend
from .machine import cpu_vendor

VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")  # OpenVINO devices that dispatch to real ones
_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """The process's one OpenVINO Core (OpenVINO recommends one per process; the lock keeps two
    threads from making two); the exporter's converters use it too."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
    return _CORE


def full_device_name(device: str) -> str:
    try:
        return str(core().get_property(device, "FULL_DEVICE_NAME"))
    except Exception as e:  # a plugin that cannot answer: say so, do not fail the load
        return f"unknown ({e})"


def _execution_devices(compiled, device: str) -> dict[str, str]:
    """Real device -> full name; for AUTO and friends, the devices the compiled model runs on."""
    try:
        real = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
    except Exception:
        real = [device]
    return {d: full_device_name(d) for d in real}


def openvino_device(device: str | int | None) -> str:
    """The shared vocabulary (runtimes/devices.py) in OpenVINO's words: None and "cpu" -> "CPU" (the
    default rule: OpenVINO has no CUDA device), "gpu[:N]" -> its GPU plugin "GPU[.N]"; its own names
    ("NPU", "AUTO", "GPU.1", "HETERO:...") pass through, upper-cased."""
    d = devices.parse_device(device)
    if d is None or d.kind == "cpu":
        return "CPU"
    if d.kind == "gpu":
        return "GPU" if d.index is None else f"GPU.{d.index}"
    if d.kind == "cuda":
        raise RuntimeUnavailableError(f"openvino has no CUDA device ({device!r}); its GPU plugin is 'gpu[:N]' "
                                      "(Intel graphics), or use backend='onnxruntime' / 'tensorrt' for CUDA")
    return d.text.upper()


@register_backend
class OpenVinoBackend(Backend):
    name = "openvino"
    format = "openvino"

    @classmethod
    def probe(cls) -> Probe:
        try:
            ov = importlib.import_module("openvino")
            devices = tuple(core().available_devices)
        except Exception as e:
            return Probe(False, f"cannot use openvino: {e}")
        if not devices:
            return Probe(False, f"openvino {ov.__version__} sees no device", ov.__version__)
        return Probe(True, f"openvino {ov.__version__} with devices {', '.join(devices)}", ov.__version__, devices)

    @classmethod
    def preference(cls) -> tuple[int, str]:
        if cpu_vendor() == "GenuineIntel":
            return 2, "openvino on an Intel CPU (its home ground)"
        # On other CPUs onnxruntime measured faster at batch 1 here (docs/benchmarks.md).
        return 4, f"openvino on this {cpu_vendor()} CPU: after onnxruntime"

    @classmethod
    def device_details(cls) -> dict[str, Any]:
        return {"device_names": {d: full_device_name(d) for d in cls.probe().devices}}

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: {install_hint(self.extra)}")
        device = openvino_device(device)
        plain = {d.split(".")[0] for d in probe.devices}
        if device.split(":")[0] not in VIRTUAL_DEVICES and device not in probe.devices \
                and device.split(".")[0] not in plain:
            raise RuntimeUnavailableError(f"openvino device {device!r} not available; devices here: "
                                          f"{list(probe.devices)} (or {', '.join(VIRTUAL_DEVICES)})")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            # OpenVINO runs FP32 layers in bf16 by default on CPUs with AVX512_BF16/AMX (Xeon since
            # Cooper Lake), so the same artifact would answer differently on Intel and AMD. Pin f32.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads and device == "CPU":
            config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1)
        if device == "CPU":
            # On CPUs with avx512_bf16/AMX OpenVINO runs FP32 layers in bf16 by default, which
            # breaks FP32 parity with torch (logits off by ~4e-3) and shifts the INT8 model's
            # unquantized layers too; the artifact's precision is the bundle's to say.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            self.compiled = core().compile_model(str(path), device, config)
        except Exception as e:
            # On the CPU a failure is the artifact's; on other devices it is usually the device's plugin.
            error = BundleError if device == "CPU" else RuntimeUnavailableError
            raise error(f"openvino cannot load {path} on {device}: {e}") from e
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
        self.device_names = _execution_devices(self.compiled, device)
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
                "device_names": self.device_names, "threads": self.threads or "default"}
