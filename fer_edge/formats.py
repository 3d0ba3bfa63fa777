"""THE registry of artifact formats: one row per format, read by the exporter (what to build and
how, where to write, what to gate against), the loader and `verify` (how to read a file's stamp)
and the runtime (which backend loads it, which pip extra provides that backend).

Adding a format is one converter module in export/, one backend module in runtimes/ and one row
here (docs/architecture.md, "Adding a format"); tests/test_bundle.py fails when a row and its
backend disagree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from .artifact_info import GraphInfo, onnx_info, openvino_info, sidecar_info
from .errors import InputError


@dataclass(frozen=True)
class Format:
    key: str  # the folder (backbone/<key>/) and the `format` of its manifest artifacts
    suffix: str  # the main file
    companions: tuple[str, ...]  # beside the main file: ".bin" = same stem, other suffix; else a file name
    precisions: tuple[str, ...]
    backend: str  # the backend that loads it: its registered name and its module, runtimes/<backend>.py
    extra: str  # pip install "fer-edge[<extra>]" provides the backend (Backend.extra reads it from here)
    needs_gpu: bool
    built_on_device: bool  # artifacts are specific to the device that built them
    exporter_builds: tuple[str, ...] = ()  # precisions export_bundle builds for this format
    runtime_builds: tuple[str, ...] = ()  # precisions the backend builds itself from the bundle's FP32 ONNX
    # export/<converter>.py: its `convert(job)` builds this format's artifacts from the FP32 ONNX
    # (fer_edge.export.stages.ConvertJob) and writes the identity stamp into them; None: not exported.
    converter: str | None = None
    # what every other artifact of this format is gated and measured against: a precision of its own,
    # or another format's artifact key ("onnx/fp32": a format converted straight from the FP32 ONNX
    # that ships no FP32 of its own)
    reference: str = "fp32"
    # reads the stamp the converter wrote and the graph interface (fer_edge.artifact_info), without
    # the backend's runtime; None: the files carry neither (TensorRT engines)
    info: Callable[[str | os.PathLike], GraphInfo] | None = None

    def reference_key(self) -> str:
        """The artifact key of the reference ("openvino/fp32", or the other format's key as given)."""
        return self.reference if "/" in self.reference else f"{self.key}/{self.reference}"

    def read_info(self, path: str | os.PathLike) -> GraphInfo | None:
        """The artifact's stamp and graph interface; None for a format that carries neither."""
        return None if self.info is None else self.info(path)

    def path(self, precision: str, device: str | None = None) -> str:
        """Where the artifact of this precision lives inside a bundle. Formats built on the device
        (TensorRT engines) also need the device key (`device_key(...)`): one folder per GPU
        architecture and TensorRT version, since an engine runs only where it was built."""
        if precision not in self.precisions:
            raise InputError(f"format {self.key!r} has no precision {precision!r}; it has {self.precisions}")
        if self.built_on_device != (device is not None):
            raise InputError(f"format {self.key!r} artifacts are "
                             + ("keyed by device: pass device=device_key(...)" if self.built_on_device
                                else "not device-specific: pass no device"))
        folder = f"backbone/{self.key}" + (f"/{check_device_key(device)}" if device is not None else "")
        return f"{folder}/model.{precision}{self.suffix}"

    def companion_paths(self, precision: str, device: str | None = None) -> list[str]:
        """Files beside the main one (OpenVINO .bin, TensorRT timing cache)."""
        main = self.path(precision, device)
        stem = main[: -len(self.suffix)]
        return [stem + s if s.startswith(".") else main.rsplit("/", 1)[0] + "/" + s for s in self.companions]


FORMATS: dict[str, Format] = {
    f.key: f
    for f in (
        # No ONNX FP16: ONNX Runtime's CPU provider runs it slower than FP32 on x86 (tiny, batch 1,
        # 1 thread: 1.73 vs 1.48 ms), and TensorRT converts FP16 itself.
        Format("onnx", ".onnx", (), ("fp32", "fp16", "int8"), "onnxruntime", "onnxruntime", False, False,
               exporter_builds=("fp32", "int8"), converter="onnx2int8", info=onnx_info),
        Format("openvino", ".xml", (".bin",), ("fp32", "fp16", "int8"), "openvino", "openvino", False, False,
               exporter_builds=("fp32", "fp16", "int8"), converter="onnx2openvino", info=openvino_info),
        # The timing cache is shared by the engines of one device folder: it makes rebuilds fast.
        # Exported only where TensorRT and a GPU are; the runtime builds FP32/FP16 engines from the
        # FP32 ONNX (INT8 needs the exporter's symmetric QDQ file).
        Format("tensorrt", ".engine", ("timing.cache",), ("fp32", "fp16", "int8"), "tensorrt", "tensorrt", True,
               True, exporter_builds=("fp32", "fp16", "int8"), runtime_builds=("fp32", "fp16"), converter="build_engine"),
        # ncnn (pnnx from the FP32 ONNX): shipped where it wins on a CPU class (base on AVX2,
        # docs/benchmarks.md). The .json sidecar holds the identity stamp and blob names.
        Format("ncnn", ".param", (".bin", ".json"), ("fp32", "fp16"), "ncnn", "ncnn", False, False,
               exporter_builds=("fp32", "fp16"), converter="onnx2ncnn", reference="onnx/fp32", info=sidecar_info),
    )
}

PRECISIONS = ("fp32", "fp16", "int8")


def buildable() -> dict[str, tuple[str, ...]]:
    """Format -> the precisions export_bundle can build for it."""
    return {k: f.exporter_builds for k, f in FORMATS.items() if f.exporter_builds}


def get_format(key: str) -> Format:
    try:
        return FORMATS[key]
    except KeyError:
        raise InputError(f"unknown format {key!r}; known formats: {sorted(FORMATS)}") from None


def read_info(path: str | os.PathLike, fmt: str) -> GraphInfo | None:
    """The stamp and graph interface of an artifact of format `fmt` (artifact_info.Unreadable when
    the file is not that format); None for formats that carry neither."""
    return get_format(fmt).read_info(path)


_DEVICE_KEY = re.compile(r"^sm_(\d+)-trt(\d+(?:\.\d+)*)$")


def device_key(compute_capability: tuple[int, int], trt_version: str) -> str:
    """'sm_87-trt10.3.0.30': the folder of the engines built for one GPU architecture (compute
    capability 8.7) with one TensorRT version; an engine is valid nowhere else."""
    major, minor = (int(v) for v in compute_capability)
    return check_device_key(f"sm_{major}{minor}-trt{trt_version}")


def check_device_key(key: str) -> str:
    if not isinstance(key, str) or not _DEVICE_KEY.match(key):
        raise InputError(f"device key {key!r} is not of the form 'sm_<major><minor>-trt<version>' (e.g. sm_87-trt10.3.0)")
    return key


def device_key_of(path: str) -> str | None:
    """The device key in a bundle path of a device-built artifact, or None."""
    for part in path.split("/"):
        if _DEVICE_KEY.match(part):
            return part
    return None
