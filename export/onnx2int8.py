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
# A convolution reading fewer channels than this stays FP32 in the ONNX Runtime flavour. A grayscale
# net's stem (1 input channel) is ~1 % of the MACs, but ORT's QLinearConv spends as long on it as on a
# 5-MMAC layer (im2col over 9-element rows), while its FP32 kernel takes a fraction of that; keeping
# it FP32 cut 10-11 us of the 75-110 us INT8 backbones of `nano` and `tiny` on one x86 core and raised
# top-1 agreement with FP32 (docs/benchmarks.md, "INT8 stem").
THIN_INPUT_CHANNELS = 4


def check_calib(calib: np.ndarray) -> np.ndarray:
    if not isinstance(calib, np.ndarray) or calib.ndim != 4 or calib.shape[1] != 1 or len(calib) == 0:
        shape = getattr(calib, "shape", type(calib).__name__)
        raise ExportError(f"calibration data must be a non-empty preprocessed (N, 1, H, W) array, got {shape}")
    if not np.isfinite(calib).all():
        raise ExportError("calibration data contains NaN or infinite values")
    return np.ascontiguousarray(calib, dtype=np.float32)


def thin_input_convs(model) -> list[str]:
    """Names of the Conv nodes of an ONNX ModelProto that read fewer than THIN_INPUT_CHANNELS
    channels (input channels = weight.dims[1] x group)."""
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
        if weights[node.input[1]][1] * group < THIN_INPUT_CHANNELS:
            if not node.name:
                raise ExportError("a thin-input Conv node has no name, so it cannot be kept FP32; name the "
                                  "graph's nodes (torch.onnx.export does)")
            names.append(node.name)
    return names


def onnx2int8(src: str | os.PathLike, dst: str | os.PathLike, calib: np.ndarray, *,
              symmetric: bool = False) -> Path:
    """Quantize `src` with the preprocessed batch `calib` (float32 (N, 1, H, W)) into `dst`.

    QDQ format, per-channel QInt8 weights, QUInt8 activations, reduce_range=True: on x86 CPUs
    without VNNI (AVX2 only) ORT's U8S8 kernels saturate and top-1 agreement with FP32 fell to
    ~60 % on the mobile net; 7-bit weights brought it back to ~98 % (platform-facts, section 5).
    `symmetric=True` makes the flavour TensorRT takes instead (signed INT8 activations and weights,
    zero points 0: TensorRT's explicit quantization accepts nothing else); it is the source of
    TensorRT INT8 engines, not meant for ONNX Runtime on x86.
    In the ONNX Runtime flavour, convolutions reading fewer than THIN_INPUT_CHANNELS channels (the
    stem) stay FP32: faster and more faithful on ORT's CPU kernels. The TensorRT flavour quantizes
    every layer it can, as before (its kernels are another matter, not measured here).
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
            fp32_nodes = [] if symmetric else thin_input_convs(onnx.load(str(pre)))
            flavour = (dict(reduce_range=False, activation_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
                       if symmetric else dict(reduce_range=True, activation_type=QuantType.QUInt8,
                                              nodes_to_exclude=fp32_nodes))
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, calibration_providers=["CPUExecutionProvider"], **flavour)
        proto = onnx.load(str(dst))
        how = ("symmetric S8 activations / S8 weights (TensorRT)" if symmetric
               else "U8 activations / S8 weights, reduce_range"
               + (f", {len(fp32_nodes)} thin-input conv(s) kept FP32" if fp32_nodes else ""))
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
