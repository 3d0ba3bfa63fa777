"""FP32 OpenVINO IR -> INT8 IR by NNCF post-training quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .onnx2int8 import check_calib


def openvino2int8(src_xml: str | os.PathLike, dst_xml: str | os.PathLike, calib: np.ndarray) -> Path:
    """Quantize the IR at `src_xml` with the preprocessed batch `calib` (float32 (N, 1, H, W)),
    using every sample (subset_size = N), and save an INT8 IR at `dst_xml`."""
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
        model = ov.Core().read_model(str(src))
        # One sample per item: NNCF feeds each item as the model input, and batch 1 keeps its
        # per-sample statistics (and bias correction) exact.
        dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
        # NNCF draws rich progress bars on stdout whatever its log level; an SDK call stays quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(model, dataset, subset_size=len(calib))
        quantized.set_rt_info("int8", ["fer_edge", "precision"])
        quantized.set_rt_info(f"nncf {nncf.__version__} post-training, {len(calib)} calibration inputs",
                              ["fer_edge", "quantization"])
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
    except Exception as e:
        raise ExportError(f"OpenVINO INT8 quantization of {src.name} failed: {type(e).__name__}: {e}") from e
    return dst
