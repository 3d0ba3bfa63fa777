"""ONNX -> OpenVINO IR (.xml + .bin), keeping the ONNX tensor names and metadata."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..runtimes.openvino import core
from .torch2onnx import INPUT, metadata_of, ort_session

PARITY_ATOL = {False: 1e-4, True: 5e-2}  # FP16 weights move outputs by ~1e-4..1e-2 relative


def convert(job) -> None:
    """The OpenVINO format's converter (fer_edge.formats): FP32 always (the reference every other
    OpenVINO precision is gated against, shipped or not), FP16 weights and NNCF INT8 when asked.
    Every IR carries the ONNX file's stamp in its rt_info."""
    fp32 = job.path("openvino", "fp32")
    onnx2openvino(job.onnx, fp32)
    wanted = job.wanted("openvino")
    if "fp16" in wanted:
        onnx2openvino(job.onnx, job.path("openvino", "fp16"), fp16=True)
    if "int8" in wanted:
        import nncf

        from .openvino2int8 import FAST_BIAS_CORRECTION, KEEP_FLOAT, describe, openvino2int8

        openvino2int8(fp32, job.path("openvino", "int8"), job.calib)
        job.calibration["openvino"] = describe(len(job.calib), KEEP_FLOAT, FAST_BIAS_CORRECTION, "performance",
                                               nncf.__version__)


def onnx2openvino(src_onnx: str | os.PathLike, dst_xml: str | os.PathLike, *, fp16: bool = False) -> Path:
    """Convert `src_onnx` to IR at `dst_xml` (its .bin beside it). Weights stay FP32 unless fp16.

    Going through ONNX (not ov.convert_model(torch_module)) is what keeps the output names.
    The IR is checked against ONNX Runtime on the source file.
    """
    import openvino as ov

    src, dst = Path(src_onnx), Path(dst_xml)
    if not src.is_file():
        raise ExportError(f"ONNX model not found: {src}")
    if dst.suffix != ".xml":
        raise ExportError(f"OpenVINO IR path must end in .xml, got {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = ov.convert_model(str(src))
        for key, value in metadata_of(src).items():
            model.set_rt_info(value, ["fer_edge", key])
        model.set_rt_info("fp16" if fp16 else "fp32", ["fer_edge", "precision"])
        # save_model compresses weights to FP16 unless told otherwise (platform-facts, pitfall 8).
        ov.save_model(model, str(dst), compress_to_fp16=fp16)
    except Exception as e:
        raise ExportError(f"ONNX -> OpenVINO conversion of {src.name} failed: {type(e).__name__}: {e}") from e
    check_against_onnx(dst, src, atol=PARITY_ATOL[fp16])
    return dst


def output_names(compiled_or_model) -> list[set[str]]:
    return [set(o.get_names()) for o in compiled_or_model.outputs]


def check_against_onnx(xml: Path, onnx_path: Path, *, atol: float) -> None:
    """Same input/output names as the ONNX file, and outputs within atol (scaled by magnitude)."""
    session = ort_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    # f32 hint: on bf16-capable CPUs OpenVINO would otherwise run the FP32 IR in bf16.
    compiled = core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = {n for i in compiled.inputs for n in i.get_names()}
    outputs = set().union(*output_names(compiled))
    if INPUT not in inputs or not set(names) <= outputs:
        raise ExportError(f"{xml.name}: IR has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                          f"the ONNX file has {INPUT!r} and {names}")
    shape = [d if isinstance(d, int) and d > 0 else 2 for d in session.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = dict(zip(names, session.run(names, {INPUT: x})))
    result = compiled({INPUT: x})
    for name in names:
        got = np.asarray(result[compiled.output(name)])
        ref = expected[name]
        diff = float(np.max(np.abs(got - ref)))
        if not diff <= atol * max(1.0, float(np.max(np.abs(ref)))):
            raise ExportError(f"{xml.name}: OpenVINO {name} differs from ONNX Runtime by {diff:.3g} "
                              f"(tolerance {atol:g} x magnitude)")
