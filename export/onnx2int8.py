"""FP32 ONNX -> INT8 QDQ ONNX by ONNX Runtime static post-training quantization."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .torch2onnx import INPUT, metadata_of, stamp

CALIB_BATCH = 32
# The stem (a convolution reading the graph's input) stays FP32 in the ONNX Runtime flavour when it
# reads fewer than STEM_FP32_CHANNELS channels and writes at most STEM_FP32_MAX_OUTPUT values per
# image. A grayscale stem is ~1 % of a net's MACs, but ORT's QLinearConv spends as long on one input
# channel as on a 5-MMAC layer (im2col over 9-element rows), while the FP32 kernel takes a fraction
# of that; past a certain output size, quantizing that output costs more than the conv saves.
# Measured by benchmarks/arch_latency.py on one x86 core (docs/benchmarks.md, "INT8 stem"): FP32 won
# for the nano family (9-14k values out: 63-172 us backbones, 8-12 us less) and tiny_fer (55k out,
# 14 us less), and lost for vgg_fer (147k out: 1.70 -> 1.80 ms). FP32 stems also agreed better
# with the FP32 model (top-1 on val: tiny 98.05 -> 98.50 %).
STEM_FP32_CHANNELS = 4
STEM_FP32_MAX_OUTPUT = 65536


def check_calib(calib: np.ndarray) -> np.ndarray:
    if not isinstance(calib, np.ndarray) or calib.ndim != 4 or calib.shape[1] != 1 or len(calib) == 0:
        shape = getattr(calib, "shape", type(calib).__name__)
        raise ExportError(f"calibration data must be a non-empty preprocessed (N, 1, H, W) array, got {shape}")
    if not np.isfinite(calib).all():
        raise ExportError("calibration data contains NaN or infinite values")
    return np.ascontiguousarray(calib, dtype=np.float32)


def fp32_stem(model) -> list[str]:
    """The names of the Conv nodes of an ONNX ModelProto that read the graph input with fewer than
    STEM_FP32_CHANNELS channels and output at most STEM_FP32_MAX_OUTPUT values per image."""
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[0] not in inputs or node.input[1] not in weights:
            continue
        attrs = {a.name: a for a in node.attribute}
        group = attrs["group"].i if "group" in attrs else 1
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
        out_c, in_c = weights[node.input[1]][0], weights[node.input[1]][1] * group
        h, w = inputs[node.input[0]][2:4]
        if not (h and w):  # dynamic spatial size: the output's size is unknown, leave it INT8
            continue
        out_values = out_c * -(-h // strides[0]) * -(-w // strides[-1])
        if in_c < STEM_FP32_CHANNELS and out_values <= STEM_FP32_MAX_OUTPUT:
            if not node.name:
                raise ExportError("the stem Conv node has no name, so it cannot be kept FP32; name the graph's "
                                  "nodes (torch.onnx.export does)")
            names.append(node.name)
    return names


def convert(job) -> None:
    """The ONNX format's converter (fer_edge.formats): its FP32 file is torch2onnx's, the source of
    every format, claimed here so that it is gated and ships when asked; INT8 by onnx2int8."""
    job.path("onnx", "fp32")
    if "int8" in job.wanted("onnx"):
        onnx2int8(job.onnx, job.path("onnx", "int8"), job.calib)


def onnx2int8(src: str | os.PathLike, dst: str | os.PathLike, calib: np.ndarray, *,
              symmetric: bool = False, fp32_stem_rule: bool = True) -> Path:
    """Quantize `src` with the preprocessed batch `calib` (float32 (N, 1, H, W)) into `dst`.

    QDQ format, per-channel QInt8 weights, QUInt8 activations, reduce_range=True: on x86 CPUs
    without VNNI (AVX2 only) ORT's U8S8 kernels saturate and top-1 agreement with FP32 fell to
    ~60 % on the mobile net; 7-bit weights brought it back to ~98 % (platform-facts, section 5).
    `symmetric=True` makes the flavour TensorRT takes instead (signed INT8 activations and weights,
    zero points 0: TensorRT's explicit quantization accepts nothing else); it is the source of
    TensorRT INT8 engines, not meant for ONNX Runtime on x86.
    In the ONNX Runtime flavour a thin stem with a small output stays FP32 (`fp32_stem`): faster and
    more faithful on ORT's CPU kernels (`fp32_stem_rule=False` quantizes it too, for comparison:
    benchmarks/arch_latency.py). The TensorRT flavour quantizes every layer
    it can (its kernels are another matter, not measured here).
    The source's metadata_props are carried over.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    calib = check_calib(calib)
    if not src.is_file():
        raise ExportError(f"ONNX model not found: {src}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calib[i : i + CALIB_BATCH] for i in range(0, len(calib), CALIB_BATCH)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_root_logger(), tempfile.TemporaryDirectory(prefix="fer_edge_int8_") as work:
            pre = Path(work) / "pre.onnx"
            # Shape inference and graph fusion first, as ORT recommends for static quantization.
            quant_pre_process(str(src), str(pre))
            fp32_nodes = fp32_stem(onnx.load(str(pre))) if fp32_stem_rule and not symmetric else []
            flavour = (dict(reduce_range=False, activation_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
                       if symmetric else dict(reduce_range=True, activation_type=QuantType.QUInt8,
                                              nodes_to_exclude=fp32_nodes))
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, calibration_providers=["CPUExecutionProvider"], **flavour)
        proto = onnx.load(str(dst))
        how = ("symmetric S8 activations / S8 weights (TensorRT)" if symmetric
               else "U8 activations / S8 weights, reduce_range"
               + (", the stem kept FP32" if fp32_nodes else ""))
        stamp(proto, {**metadata_of(src), "precision": "int8",
                      "quantization": f"onnxruntime static QDQ, per-channel, {how}, {len(calib)} calibration inputs"})
        onnx.save(proto, str(dst))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX INT8 quantization of {src.name} failed: {type(e).__name__}: {e}") from e
    return dst


@contextlib.contextmanager
def quiet_root_logger():
    """ORT's quantizer logs advice through logging.warning/info on the root logger, which also
    installs a stderr handler (basicConfig) in an application that had none; undo both."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(max(level, logging.ERROR))
    if not handlers:
        root.addHandler(logging.NullHandler())
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
