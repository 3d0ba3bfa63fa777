"""FP32 OpenVINO IR -> INT8 IR by NNCF post-training quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..runtimes.openvino import core
from .onnx2int8 import check_calib


# How the exporter quantizes, chosen on the H200 `tiny` (nano_fer) on FER2013 val (macro-F1 / accuracy
# drop vs the FP32 IR, benchmarks/int8_calibration.py): NNCF defaults on 300 crops -3.43 / -0.33 pp;
# 1000 crops -3.29 / -0.17; preset MIXED alone changes nothing; the classifier kept in FP32 +0.06 /
# 0.00 pp with full bias correction on 1000 crops (agreement 98.4 %). The 7-way classifier is where
# INT8 rounding flips the rare classes' logits; it costs nothing to keep in float.
KEEP_FLOAT = ("classifier",)
FAST_BIAS_CORRECTION = False


def openvino2int8(src_xml: str | os.PathLike, dst_xml: str | os.PathLike, calib: np.ndarray, *,
                  keep_float: tuple[str, ...] = KEEP_FLOAT, fast_bias_correction: bool = FAST_BIAS_CORRECTION,
                  preset: str = "performance") -> Path:
    """Quantize the IR at `src_xml` with the preprocessed batch `calib` (float32 (N, 1, H, W)),
    using every sample (subset_size = N), and save an INT8 IR at `dst_xml`.

    keep_float: parts left in FP32: "classifier" (every MatMul: the fully connected layers) and/or
      "first_conv" (the first convolution, which sees the raw normalised pixels).
    fast_bias_correction: NNCF's cheap bias correction (True) or the full one (False, slower).
    preset: "performance" (symmetric activations) or "mixed" (asymmetric activations)."""
    import nncf
    import openvino as ov

    src, dst = Path(src_xml), Path(dst_xml)
    calib = check_calib(calib)
    if not src.is_file():
        raise ExportError(f"OpenVINO IR not found: {src}")
    if dst.suffix != ".xml":
        raise ExportError(f"OpenVINO IR path must end in .xml, got {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    nncf.set_log_level(logging.ERROR)  # otherwise INFO lines and progress bars for every statistic pass
    try:
        model = core().read_model(str(src))
        unknown = set(keep_float) - {"classifier", "first_conv"}
        if unknown or preset not in ("performance", "mixed"):
            raise ExportError(f"keep_float takes 'classifier' / 'first_conv' (got {sorted(unknown)}); "
                              f"preset 'performance' or 'mixed' (got {preset!r})")
        names = []
        if "first_conv" in keep_float:
            names = [next(op.get_friendly_name() for op in model.get_ordered_ops()
                          if op.get_type_name() == "Convolution")]
        types = ["MatMul"] if "classifier" in keep_float else []
        scope = nncf.IgnoredScope(names=names, types=types, validate=False) if names or types else None
        # One sample per item: NNCF feeds each item as the model input, and batch 1 keeps its
        # per-sample statistics (and bias correction) exact.
        dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
        # NNCF draws rich progress bars on stdout whatever its log level; an SDK call stays quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(model, dataset, subset_size=len(calib), ignored_scope=scope,
                                      fast_bias_correction=fast_bias_correction,
                                      preset=nncf.QuantizationPreset(preset))
        quantized.set_rt_info("int8", ["fer_edge", "precision"])
        quantized.set_rt_info(describe(len(calib), keep_float, fast_bias_correction, preset, nncf.__version__),
                              ["fer_edge", "quantization"])
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
    except Exception as e:
        raise ExportError(f"OpenVINO INT8 quantization of {src.name} failed: {type(e).__name__}: {e}") from e
    return dst


def describe(n: int, keep_float, fast_bias_correction: bool, preset: str, version: str) -> str:
    return (f"nncf {version} post-training, preset {preset}, "
            f"{'fast' if fast_bias_correction else 'full'} bias correction, "
            f"FP32 kept: {', '.join(keep_float) or 'nothing'}, {n} calibration inputs")
