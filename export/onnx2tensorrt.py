"""ONNX -> TensorRT engine, built with the TensorRT Python API on the GPU that will run it.

Written against TensorRT 10 and 11 (platform-facts section 7):
- explicit batch always, one optimization profile for batch 1..max_batch;
- INT8 only from a QDQ ONNX (`onnx2int8(..., symmetric=True)`): TensorRT 10.1+ dropped implicit
  calibration and 11 removed the precision builder flags. On 10 the network is built strongly typed
  when the flag exists (the Q/DQ nodes then decide every precision) and BuilderFlag.INT8 is set only
  for such a QDQ graph; on 11 every network is strongly typed;
- FP16 by BuilderFlag.FP16 where it still exists (10), else from an FP16 ONNX (`onnx2fp16`) built
  strongly typed (11);
- FP32 with TF32 disabled, so "fp32" means what it says;
- a timing cache read from and written back to `timing_cache`, which makes rebuilds seconds.

Untested in this repository's CI (no GPU, and TensorRT cannot be pip-installed there): only the
refusal path runs everywhere. Engines are valid only for the GPU architecture and TensorRT
version that built them, hence `fer_edge.formats.device_key`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ExportError, RuntimeUnavailableError
from ..runtimes.cuda_probe import cuda_devices, probe_tensorrt
from .torch2onnx import INPUT, OUTPUTS

DEFAULT_MAX_BATCH = 32
WORKSPACE = 1 << 30


def tensorrt_or_raise(what: str = "build TensorRT engines"):
    """The tensorrt module when it can build here, else RuntimeUnavailableError naming what is missing."""
    probe = probe_tensorrt(builder=True)
    if not probe.usable:
        raise RuntimeUnavailableError(
            f"cannot {what} on this machine: {probe.reason}. TensorRT engines are built on the device that "
            "runs them: export the bundle without 'tensorrt' here, then run `fer-edge build-engine BUNDLE` "
            "on the target (a Jetson or a CUDA machine with TensorRT 10+)")
    import tensorrt as trt

    return trt


def onnx2tensorrt(src_onnx: str | os.PathLike, dst_engine: str | os.PathLike, *, precision: str = "fp16",
                  max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = 1, device: int = 0,
                  timing_cache: str | os.PathLike | None = None, workspace: int = WORKSPACE) -> dict[str, Any]:
    """Build an engine from `src_onnx` (FP32 ONNX for fp32/fp16, a symmetric QDQ ONNX for int8) and
    write it to `dst_engine`. Returns what the manifest records about it."""
    trt = tensorrt_or_raise()
    src, dst = Path(src_onnx), Path(dst_engine)
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")
    if not src.is_file():
        raise ExportError(f"ONNX model not found: {src}")
    if not 1 <= opt_batch <= max_batch:
        raise ExportError(f"need 1 <= opt_batch ({opt_batch}) <= max_batch ({max_batch})")
    gpus = cuda_devices()
    gpu = next((g for g in gpus if g.index == device), None)
    if gpu is None:
        raise RuntimeUnavailableError(f"no CUDA device {device}; devices: {[tuple(g) for g in gpus]}")
    has_flag = lambda name: hasattr(trt.BuilderFlag, name)  # noqa: E731  (TensorRT 11 removed them)
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    with tempfile.TemporaryDirectory(prefix="fer_edge_trt_") as work:
        source = src
        if precision == "fp16" and not has_flag("FP16"):
            from .onnx2fp16 import onnx2fp16

            source = onnx2fp16(src, Path(work) / "model.fp16.onnx")
        # Strong typing where the flag exists and the graph carries its precision (QDQ, FP16 ONNX);
        # on TensorRT 11 every network is strongly typed and the flag may be gone.
        typed = strongly_typed and (precision == "int8" or source is not src)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ExportError(f"TensorRT cannot parse {src.name}: " + "; ".join(errors[:5]))
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        if names != [INPUT] or set(outputs) != set(OUTPUTS):
            raise ExportError(f"{src.name}: inputs {names}, outputs {outputs}; expected [{INPUT!r}] and {list(OUTPUTS)}")
        if precision == "int8" and not any(network.get_layer(i).type == trt.LayerType.QUANTIZE
                                           for i in range(network.num_layers)):
            raise ExportError(f"{src.name} has no Q/DQ nodes: TensorRT 10.1+ builds INT8 only from a QDQ ONNX "
                              "(onnx2int8(..., symmetric=True); bundles ship it as "
                              "backbone/tensorrt/model.int8.qdq.onnx)")
        _, c, h, w = network.get_input(0).shape
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT, (1, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))
        config.add_optimization_profile(profile)
        if has_flag("TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if precision == "fp16" and source is src:
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8" and not typed and has_flag("INT8"):  # a QDQ graph, weakly typed (TensorRT < 9)
            config.set_flag(trt.BuilderFlag.INT8)
        cache_path = Path(timing_cache) if timing_cache else None
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        start = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if plan is None:
            raise ExportError(f"TensorRT could not build a {precision} engine from {src.name} (see its log above)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(bytes(plan))
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    check_engine(trt, dst, logger)
    return {"path": str(dst), "precision": precision, "tensorrt": trt.__version__, "gpu": gpu.name,
            "compute_capability": list(gpu.compute_capability), "max_batch": max_batch, "opt_batch": opt_batch,
            "strongly_typed": typed or not has_flag("FP16"), "source": source.name,
            "build_seconds": round(seconds, 2)}


def check_engine(trt: Any, path: Path, logger: Any) -> None:
    """The engine deserializes here (None means failure, not an exception) and has our tensors."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ExportError(f"the engine just built at {path} does not deserialize")
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if names != {INPUT, *OUTPUTS}:
        raise ExportError(f"{path.name}: engine tensors {sorted(names)}, expected {[INPUT, *OUTPUTS]}")
