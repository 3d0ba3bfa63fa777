"""ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, RuntimeUnavailableError
from .base import Backend, Probe, register_backend


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    format = "onnx"
    extra = "onnxruntime"
    module = "onnxruntime"

    @classmethod
    def probe(cls) -> Probe:
        try:
            ort = importlib.import_module("onnxruntime")
        except Exception as e:  # ImportError, or a broken native library (OSError)
            return Probe(False, f"cannot import onnxruntime: {e}")
        providers = tuple(ort.get_available_providers())
        if "CPUExecutionProvider" not in providers:
            return Probe(False, f"onnxruntime {ort.__version__} has no CPUExecutionProvider", ort.__version__)
        return Probe(True, f"onnxruntime {ort.__version__} with {', '.join(providers)}", ort.__version__,
                      providers)

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: pip install 'fer-edge[{self.extra}]'")
        if device not in (None, "cpu", "CPU"):
            raise RuntimeUnavailableError(f"onnxruntime backend runs on 'cpu' only here, not {device!r}")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise BundleError(f"onnxruntime cannot load {path}: {e}") from e
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if input_name not in inputs or not set(output_names) <= set(outputs):
            raise BundleError(
                f"{path}: graph has inputs {inputs} and outputs {outputs}; manifest expects input "
                f"{input_name!r} and outputs {list(output_names)}"
            )
        self.input_name, self.output_names = input_name, tuple(output_names)
        self.threads, self.version = threads, ort.__version__

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe, so one session serves every thread.
        out = self.session.run(list(self.output_names), {self.input_name: batch})
        return dict(zip(self.output_names, out))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version, "device": "cpu",
                "providers": self.session.get_providers(), "threads": self.threads or "default"}
