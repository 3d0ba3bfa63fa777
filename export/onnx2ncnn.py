"""FP32 ONNX -> ncnn (.param + .bin) through `pnnx`, plus the sidecar JSON that ncnn's files cannot hold.

ncnn's param file has no metadata and names its blobs in0/out0/out1, so `model.<prec>.json` beside
it carries what the ONNX file carried: the `fer_edge` identity stamp, which blob is which graph
input/output (matched at conversion by running both), the per-crop shapes, the runtime options the
artifact was checked with, and the sha256 of the param and bin it describes. `fer_edge.artifact_info`
reads it without ncnn; the backend refuses a param/bin that is not the pair it names.

pnnx runs in a temporary folder (it writes a dozen side files beside its input); the outputs are
byte-identical from one run to the next, so re-exports change nothing they need not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..bundle import sha256_file as _sha256
from ..errors import ExportError
from .torch2onnx import INPUT, metadata_of, ort_session

SIDECAR_FORMAT = "fer-edge-ncnn"
# Relative to the outputs' magnitude, as onnx2openvino: FP16 weights (and FP16 storage where the CPU
# has F16C) move outputs by ~1e-3 relative; FP32 only by summation order.
PARITY_ATOL = {"fp32": 1e-4, "fp16": 5e-2}
PNNX_TIMEOUT_S = 600
STORAGE = {"fp16": "FP16 weights; ncnn's FP16 storage where the CPU has F16C (its default)",
           "fp32": "FP32 weights and FP32 storage"}  # what the manifest says of each precision


def pnnx_executable() -> Path:
    try:
        import pnnx
    except ImportError as e:
        raise ExportError(f"ONNX -> ncnn needs the pnnx converter ({e}); install it with: pip install 'fer-edge[ncnn]' "
                          "(pnnx wheels exist for x86-64 Linux)") from e
    exe = Path(pnnx.__file__).with_name("pnnx")
    if not exe.is_file():
        raise ExportError(f"the pnnx package has no executable at {exe}")
    return exe


def convert(job) -> None:
    """The ncnn format's converter (fer_edge.formats): each precision asked for, from the FP32 ONNX,
    which is claimed too (the format's reference: every ncnn artifact is gated against it, and it
    ships only when asked). Every sidecar carries the ONNX file's stamp."""
    for precision in sorted(job.wanted("ncnn")):
        onnx2ncnn(job.onnx, job.path("ncnn", precision), precision=precision)
    job.records["ncnn"] = {"storage": {f"ncnn/{p}": STORAGE[p] for p in sorted(job.wanted("ncnn"))}}
    if not any(b[:2] == ("onnx", "fp32") for b in job.built):
        job.path("onnx", "fp32")


def onnx2ncnn(src_onnx: str | os.PathLike, dst_param: str | os.PathLike, *, precision: str = "fp16") -> Path:
    """Convert `src_onnx` (FP32, input N x 1 x H x W) to `dst_param` with its .bin and .json beside it.

    precision "fp16": FP16 weights, run with ncnn's defaults (FP16 storage where the CPU has it);
    "fp32": FP32 weights and FP32 storage, the same arithmetic as ONNX Runtime up to summation order.
    The result is checked against ONNX Runtime on the source file before it is returned.
    """
    if precision not in PARITY_ATOL:
        raise ExportError(f"ncnn precision must be one of {sorted(PARITY_ATOL)}, got {precision!r}")
    src, dst = Path(src_onnx), Path(dst_param)
    if not src.is_file():
        raise ExportError(f"ONNX model not found: {src}")
    if dst.suffix != ".param":
        raise ExportError(f"ncnn param path must end in .param, got {dst}")
    session = ort_session(src)
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise ExportError(f"{src.name}: input {INPUT!r} is {shape}; ncnn conversion needs N x C x H x W with fixed C, H, W")
    exe = pnnx_executable()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fer-edge-pnnx-") as tmp:
        work = Path(tmp)
        shutil.copy(src, work / "model.onnx")
        cmd = [str(exe), "model.onnx", f"inputshape=[1,{shape[1]},{shape[2]},{shape[3]}]",
               "ncnnparam=model.param", "ncnnbin=model.bin", f"fp16={int(precision == 'fp16')}"]
        try:
            r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ExportError(f"pnnx could not convert {src.name}: {type(e).__name__}: {e}") from e
        param, weights = work / "model.param", work / "model.bin"
        if r.returncode or not param.is_file() or not weights.is_file():
            tail = (r.stderr or r.stdout or "").strip()[-800:]
            raise ExportError(f"pnnx failed on {src.name} (exit {r.returncode}): {tail}")
        blobs = match_blobs(param, weights, session, precision)
        shutil.copy(param, dst)
        shutil.copy(weights, dst.with_suffix(".bin"))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "precision": precision,
        "options": {"fp16_storage": precision == "fp16"},
        "fer_edge": {**metadata_of(src), "precision": precision},
        "inputs": {INPUT: {"blob": blobs.pop(INPUT), "shape": [-1, *shape[1:]]}},
        "outputs": {name: {"blob": blob, "shape": [-1, size]} for name, (blob, size) in sorted(blobs.items())},
        "param_sha256": _sha256(dst),
        "bin_sha256": _sha256(dst.with_suffix(".bin")),
        "source": {"onnx_sha256": _sha256(src), "converter": f"pnnx {_version('pnnx')}",
                   "ncnn": _version("ncnn")},
    }
    dst.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    return dst


def match_blobs(param: Path, weights: Path, session, precision: str) -> dict:
    """{graph input name: blob, graph output name: (blob, values per crop)}: each ONNX output is the
    ncnn output blob whose values match it on a random input, within the parity tolerance."""
    from ..runtimes.ncnn import NcnnBackend, output_blobs, read_param

    layers = read_param(param)
    inputs = [tops[0] for kind, _, tops in layers if kind == "Input"]
    outs = output_blobs(layers)
    if len(inputs) != 1:
        raise ExportError(f"pnnx wrote {len(inputs)} Input layers; the model has one input")
    names = [o.name for o in session.get_outputs()]
    shape = [2, *session.get_inputs()[0].shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = dict(zip(names, session.run(names, {INPUT: x})))
    net = NcnnBackend.open_net(param, weights, threads=1, fp16_storage=precision == "fp16")
    got = NcnnBackend.extract(net, x, inputs[0], outs)
    blobs: dict = {INPUT: inputs[0]}
    atol = PARITY_ATOL[precision]
    for name in names:
        ref = expected[name].reshape(len(x), -1)
        limit = atol * max(1.0, float(np.max(np.abs(ref))))
        found = [b for b in outs if got[b].shape == ref.shape and float(np.max(np.abs(got[b] - ref))) <= limit]
        if len(found) != 1:
            diffs = {b: (float(np.max(np.abs(got[b] - ref))) if got[b].shape == ref.shape else
                         f"shape {got[b].shape}") for b in outs}
            raise ExportError(f"ncnn {precision}: no single output blob matches ONNX output {name!r} {ref.shape} "
                              f"within {limit:.3g} (blobs: {diffs})")
        blobs[name] = (found[0], ref.shape[1])
    return blobs


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
