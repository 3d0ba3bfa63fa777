"""TensorRT backend: a serialized engine for this GPU and TensorRT version, run with the 10/11 API.

The engine comes from the bundle (`backbone/tensorrt/<sm_XY>-trt<ver>/model.<prec>.engine`), else
from the cache (`$FER_EDGE_CACHE/tensorrt/<onnx sha256>/<key>/`), else it is built there on first use
from the bundle's FP32 ONNX where the full TensorRT (builder + ONNX parser) is installed. INT8 engines
need a symmetric QDQ ONNX, so they are only ever loaded from the bundle (`fer-edge build-engine`).

Device memory goes through torch (CUDA build) or cuda-python, whichever imports. Untested in this
repository's CI (no GPU, TensorRT not pip-installable there): only the honest refusal runs everywhere.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, FerEdgeError, InputError, RuntimeUnavailableError, install_hint
from ..formats import FORMATS, device_key, device_key_of
from .base import Backend, Probe, register_backend
from .devices import cuda_index

BUILDABLE = FORMATS["tensorrt"].runtime_builds  # from the bundle's FP32 ONNX; see the module docstring for INT8
_BUILD_LOCK = threading.Lock()


def gpu_index(device: str | int | None) -> int:
    """The shared vocabulary (runtimes/devices.py): None -> cuda:0, "cuda[:N]" / "gpu[:N]" / N."""
    return cuda_index(device, backend="tensorrt")


def target_key(device: str | None) -> tuple[Any, str]:
    """(the CUDA device, its engine folder key 'sm_XY-trt<ver>'), or RuntimeUnavailableError."""
    from .cuda_probe import cuda_devices, import_tensorrt

    trt, why = import_tensorrt()
    if trt is None:
        raise RuntimeUnavailableError(why)
    index = gpu_index(device)
    gpus = cuda_devices()
    gpu = next((g for g in gpus if g.index == index), None)
    if gpu is None:
        raise RuntimeUnavailableError(f"no CUDA device {index}; devices here: {[tuple(g) for g in gpus]}")
    return gpu, device_key(gpu.compute_capability, trt.__version__)


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    format = "tensorrt"

    @classmethod
    def probe(cls) -> Probe:
        from .cuda_probe import probe_tensorrt

        return probe_tensorrt()

    @classmethod
    def preference(cls) -> tuple[int, str]:
        return 0, "TensorRT on a CUDA device"

    @classmethod
    def precisions(cls, bundle) -> tuple[str, ...]:
        engines = [a for a in bundle.manifest.artifacts if a.format == cls.format]
        try:  # engines built for another GPU or TensorRT version do not count here
            key = target_key(None)[1]
            engines = [a for a in engines if device_key_of(a.path) == key]
        except FerEdgeError:
            pass  # no TensorRT or GPU: the probe will say so; list what the bundle ships
        shipped = [a.precision for a in engines]
        can_build = [p for p in BUILDABLE if bundle.manifest.artifact("onnx", "fp32") is not None]
        return tuple(dict.fromkeys(shipped + can_build))

    @classmethod
    def artifact_path(cls, bundle, precision: str, device: str | None) -> Path:
        gpu, key = target_key(device)
        for art in bundle.manifest.artifacts:
            if art.format == cls.format and art.precision == precision and device_key_of(art.path) == key:
                return bundle.artifact_path(art)
        shipped = sorted({device_key_of(a.path) or "?" for a in bundle.manifest.artifacts if a.format == cls.format})
        if precision not in BUILDABLE:
            raise RuntimeUnavailableError(
                f"bundle {bundle.name!r} has no TensorRT {precision} engine for {key} (it has engines for "
                f"{shipped or 'no device'}); build one on this device with `fer-edge build-engine`")
        return cls._cached_or_built(bundle, precision, gpu, key)

    @classmethod
    def _cached_or_built(cls, bundle, precision: str, gpu, key: str) -> Path:
        from ..bundle import cache_dir

        onnx = bundle.manifest.artifact("onnx", "fp32")
        if onnx is None:
            raise BundleError(f"bundle {bundle.name!r} has no FP32 ONNX to build a TensorRT engine from")
        digest = bundle.manifest.files[onnx.path]["sha256"]
        folder = cache_dir() / "tensorrt" / digest[:32] / key
        engine = folder / Path(FORMATS[cls.format].path(precision, key)).name
        with _BUILD_LOCK:  # one build per process; a second thread waits for the file
            if not engine.is_file():
                try:
                    from ..export.onnx2tensorrt import onnx2tensorrt
                except ImportError as e:
                    raise RuntimeUnavailableError(
                        f"no TensorRT {precision} engine for {key} in the bundle or the cache, and the engine "
                        f"builder cannot be imported ({e}); {install_hint('export,tensorrt')}") from e
                onnx2tensorrt(bundle.artifact_path(onnx), engine, precision=precision, device=gpu.index,
                              timing_cache=folder / "timing.cache")
        return engine

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        from .cuda_probe import import_tensorrt

        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: {install_hint(self.extra)}")
        trt, _ = import_tensorrt()
        self.index = gpu_index(device)
        self.memory = device_memory(self.index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:  # deserialize reports failure by returning None, not by raising
            raise RuntimeUnavailableError(
                f"TensorRT {trt.__version__} cannot deserialize {path} on cuda:{self.index} (an engine runs only "
                "on the GPU architecture and TensorRT version that built it)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if input_name not in names or not set(output_names) <= set(names):
            raise BundleError(f"{path}: engine tensors {names}; manifest expects input {input_name!r} and "
                              f"outputs {list(output_names)}")
        self.input_name, self.output_names = input_name, tuple(output_names)
        self.max_batch = int(self.engine.get_tensor_profile_shape(input_name, 0)[2][0])
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.threads, self.version, self.path = threads, trt.__version__, Path(path)
        # An execution context is not thread-safe: one per concurrent caller, as for OpenVINO.
        self._contexts: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = [self._run_chunk(batch[i: i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return {n: np.concatenate([p[n] for p in parts]) for n in self.output_names}

    def _run_chunk(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            ctx, stream = self._contexts.get_nowait()
        except queue.Empty:
            ctx, stream = self.engine.create_execution_context(), self.memory.stream()
            if ctx is None:
                raise RuntimeUnavailableError("TensorRT could not create an execution context (GPU memory?)")
        try:
            if not ctx.set_input_shape(self.input_name, batch.shape):
                raise InputError(f"TensorRT engine refuses input shape {batch.shape}")
            x = self.memory.to_device(np.ascontiguousarray(batch, self.dtypes[self.input_name]), stream)
            outs = {n: self.memory.empty(tuple(ctx.get_tensor_shape(n)), self.dtypes[n]) for n in self.output_names}
            for name, buf in ((self.input_name, x), *outs.items()):
                if not ctx.set_tensor_address(name, self.memory.address(buf)):
                    raise FerEdgeError(f"TensorRT refused the device address of tensor {name!r}")
            if not ctx.execute_async_v3(self.memory.handle(stream)):
                raise FerEdgeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            return {n: self.memory.to_host(b, stream).astype(np.float32, copy=False) for n, b in outs.items()}
        finally:
            self._contexts.put((ctx, stream))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version, "device": f"cuda:{self.index}",
                "engine": str(self.path), "max_batch": self.max_batch, "memory": self.memory.name}


def device_memory(index: int):
    """Device buffers through the first library that imports: torch (CUDA build), then cuda-python."""
    errors = []
    for cls in (_TorchMemory, _CudaPythonMemory):
        try:
            return cls(index)
        except Exception as e:  # ImportError, or a CPU-only torch
            errors.append(f"{cls.name}: {e}")
    raise RuntimeUnavailableError("TensorRT needs device memory from torch (CUDA build) or cuda-python: "
                                  + "; ".join(errors) + "; pip install cuda-python")


class _TorchMemory:
    name = "torch"

    def __init__(self, index: int) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} has no CUDA")
        self.torch, self.device = torch, torch.device(f"cuda:{index}")

    def stream(self):
        return self.torch.cuda.Stream(self.device)

    def handle(self, stream) -> int:
        return stream.cuda_stream

    def to_device(self, array: np.ndarray, stream):
        with self.torch.cuda.stream(stream):
            return self.torch.from_numpy(array).to(self.device, non_blocking=False)

    def empty(self, shape, dtype: np.dtype):
        return self.torch.empty(shape, dtype=self.torch.from_numpy(np.empty(0, dtype)).dtype, device=self.device)

    def address(self, buf) -> int:
        return buf.data_ptr()

    def to_host(self, buf, stream) -> np.ndarray:
        stream.synchronize()
        return buf.cpu().numpy()


class _CudaPythonMemory:
    """cuda.bindings.runtime: every call returns (error, ...); each one is checked."""

    name = "cuda-python"

    def __init__(self, index: int) -> None:
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self._check(cudart.cudaSetDevice(index), "cudaSetDevice")

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise FerEdgeError(f"{what} failed: {err}")
        return rest[0] if rest else None

    def stream(self):
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def handle(self, stream) -> int:
        return int(stream)

    def to_device(self, array: np.ndarray, stream):
        buf = self.empty(array.shape, array.dtype)
        self._check(self.rt.cudaMemcpyAsync(buf.ptr, array.ctypes.data, array.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync")
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return buf

    def empty(self, shape, dtype: np.dtype):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return _Buffer(self, self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"), shape, dtype)

    def address(self, buf) -> int:
        return int(buf.ptr)

    def to_host(self, buf, stream) -> np.ndarray:
        out = np.empty(buf.shape, buf.dtype)
        self._check(self.rt.cudaMemcpyAsync(out.ctypes.data, buf.ptr, out.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync")
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return out


class _Buffer:
    def __init__(self, memory: _CudaPythonMemory, ptr, shape, dtype) -> None:
        self.memory, self.ptr, self.shape, self.dtype = memory, ptr, shape, dtype

    def __del__(self) -> None:
        self.memory.rt.cudaFree(self.ptr)
