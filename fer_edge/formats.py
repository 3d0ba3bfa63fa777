"""THE table of artifact formats. The exporter writes what it says; the runtime loads by it.

One row per format: where its files live in a bundle, which precisions exist, which backend
runs it, which pip extra provides that backend, and whether it needs a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Format:
    key: str
    suffix: str  # the main file
    companions: tuple[str, ...]  # suffixes of files that must sit beside the main file
    precisions: tuple[str, ...]
    backend: str  # the runtime backend that loads this format
    extra: str  # pip install "fer-edge[<extra>]" provides the backend
    needs_gpu: bool
    built_on_device: bool  # artifacts are specific to the device that built them

    def path(self, precision: str) -> str:
        """Where the artifact of this precision lives inside a bundle."""
        if precision not in self.precisions:
            raise InputError(f"format {self.key!r} has no precision {precision!r}; it has {self.precisions}")
        return f"backbone/{self.key}/model.{precision}{self.suffix}"


FORMATS: dict[str, Format] = {
    f.key: f
    for f in (
        Format("onnx", ".onnx", (), ("fp32", "fp16", "int8"), "onnxruntime", "onnxruntime", False, False),
        Format("openvino", ".xml", (".bin",), ("fp32", "fp16", "int8"), "openvino", "openvino", False, False),
        Format("tensorrt", ".engine", (), ("fp32", "fp16", "int8"), "tensorrt", "tensorrt", True, True),
    )
}

PRECISIONS = ("fp32", "fp16", "int8")


def get_format(key: str) -> Format:
    try:
        return FORMATS[key]
    except KeyError:
        raise InputError(f"unknown format {key!r}; known formats: {sorted(FORMATS)}") from None


def format_for_backend(backend: str) -> Format:
    for f in FORMATS.values():
        if f.backend == backend:
            return f
    raise InputError(f"no format is run by backend {backend!r}; backends: {sorted(f.backend for f in FORMATS.values())}")
