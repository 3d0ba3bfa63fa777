"""TensorRT engines for a bundle: built from the bundle's ONNX on the device that will run them
(`fer-edge build-engine BUNDLE` on a Jetson), stored under backbone/tensorrt/<sm_XY>-trt<ver>/
with the timing cache beside them, and added to the manifest.

INT8 engines need the symmetric QDQ ONNX (`INT8_SOURCE`) the exporter writes when asked for
TensorRT INT8; the ONNX Runtime INT8 file uses unsigned activations, which TensorRT refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import BundleError, ExportError
from ..formats import FORMATS, device_key
from .onnx2tensorrt import DEFAULT_MAX_BATCH, onnx2tensorrt, tensorrt_or_raise

INT8_SOURCE = "backbone/tensorrt/model.int8.qdq.onnx"
ENGINES_KEY = "tensorrt_engines"  # manifest top-level key: engine path -> how it was built


def convert(job) -> None:
    """The TensorRT format's converter (fer_edge.formats): one engine per precision asked for, for
    this GPU, from the FP32 ONNX (INT8: from the symmetric QDQ file, shipped so that build-engine can
    rebuild it on other devices). The FP32 ONNX is claimed too: the engines' source is gated with
    them and ships only when asked."""
    from .onnx2int8 import onnx2int8

    if "int8" in job.precisions:
        onnx2int8(job.onnx, job.stage / INT8_SOURCE, job.calib, symmetric=True)
    engines = build_engines(job.stage, job.precisions, max_batch=job.max_batch)
    job.built += [("tensorrt", r["precision"], rel) for rel, r in engines.items()]
    job.records[ENGINES_KEY] = engines
    if not any(b[:2] == ("onnx", "fp32") for b in job.built):
        job.path("onnx", "fp32")


def build_engines(root: Path, precisions: Iterable[str], *, max_batch: int = DEFAULT_MAX_BATCH,
                  device: int = 0) -> dict[str, dict[str, Any]]:
    """Build one engine per precision into the bundle folder `root` (its ONNX sources must be there).
    Returns {engine path: build record}; does not touch the manifest."""
    from ..runtimes.cuda_probe import cuda_devices

    trt = tensorrt_or_raise()
    gpu = next((g for g in cuda_devices() if g.index == device), None)
    if gpu is None:
        raise ExportError(f"no CUDA device {device}")
    key = device_key(gpu.compute_capability, trt.__version__)
    fmt = FORMATS["tensorrt"]
    records = {}
    for precision in precisions:
        source = root / (INT8_SOURCE if precision == "int8" else FORMATS["onnx"].path("fp32"))
        if not source.is_file():
            raise ExportError(
                f"cannot build a TensorRT {precision} engine: the bundle has no {source.relative_to(root)}"
                + (" (export with --targets onnx,tensorrt --precision int8 to ship TensorRT's QDQ source)"
                   if precision == "int8" else ""))
        rel = fmt.path(precision, key)
        cache = root / fmt.companion_paths(precision, key)[0]
        info = onnx2tensorrt(source, root / rel, precision=precision, max_batch=max_batch, device=device,
                             timing_cache=cache)
        records[rel] = {**info, "path": rel, "device_key": key, "timing_cache": cache.relative_to(root).as_posix()}
    return records


def build_engine(bundle: str | os.PathLike, *, precisions: Iterable[str] = ("fp16",),
                 max_batch: int = DEFAULT_MAX_BATCH, device: int = 0) -> list[str]:
    """Build TensorRT engines for this device into a bundle folder and record them in its manifest.
    Returns the engine paths. Fails with RuntimeUnavailableError where TensorRT or a GPU is missing."""
    from ..bundle import Bundle, write_manifest
    from ..manifest import Artifact

    tensorrt_or_raise()
    b = Bundle.open(bundle)
    if b.root != b.source:
        raise BundleError(f"{b.source} is a zip; engines are written into a bundle folder: unzip it first")
    records = build_engines(b.root, tuple(dict.fromkeys(precisions)), max_batch=max_batch, device=device)
    m = b.manifest
    new = [Artifact("tensorrt", r["precision"], rel) for rel, r in records.items()]
    m.artifacts = [a for a in m.artifacts if a.path not in records] + new
    m.extra[ENGINES_KEY] = {**(m.extra.get(ENGINES_KEY) or {}), **records}
    write_manifest(b.root, m)
    Bundle.open(b.root)
    return list(records)
