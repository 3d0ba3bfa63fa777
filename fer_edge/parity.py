"""THE parity check: how far an artifact's outputs on the golden inputs are from the golden (torch
FP32) outputs, and whether that is within tolerance. Used by the exporter (before it ships an
artifact) and by `fer_edge.verify` (on the machine that runs it). Numpy only.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from .errors import ParityError

OUTPUTS = ("logits", "embedding")
# Per precision, how far an artifact may be from the torch FP32 outputs on the golden inputs.
# INT8 is judged by direction (embedding cosine) and top-1, not by value; the export also records
# per-artifact thresholds from what it measured (manifest golden.thresholds), which take precedence.
TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-4},
    "fp16": {"atol": 1e-2, "rtol": 1e-2},
    "int8": {"min_embedding_cosine": 0.9, "min_top1_agreement": 0.75},
}
TOLERANCE_KEYS = ("atol", "min_top1_agreement", "min_embedding_cosine")
# platform.machine() -> the CPU class whose INT8 kernels a figure belongs to. Within a class, CPUs
# differ in instructions of one family (VNNI or not); across classes, the runtimes run other code
# (NEON/SDOT vs AVX), so INT8 outputs and figures are stated per class (manifest `cpu_classes`).
CPU_CLASSES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def isa_family(machine: str | None = None) -> str:
    """'x86_64', 'arm64', or the machine name itself for any other CPU."""
    m = (machine if machine is not None else platform.machine()).lower()
    return CPU_CLASSES.get(m, m)


def tolerance_for(golden: dict[str, Any], key: str, precision: str, cls: str | None = None) -> dict[str, float]:
    """The golden tolerance of artifact `key` on CPU class `cls` (default: this machine's): the
    per-precision tolerance, overridden by the thresholds recorded at export, overridden by those
    recorded for this class (`golden.cpu_classes[cls].thresholds`; never for FP32, which stays tight)."""
    per_class = ((golden.get("cpu_classes") or {}).get(cls or isa_family()) or {}).get("thresholds") or {}
    return {**(golden.get("tolerance") or {}).get(precision, {}), **(golden.get("thresholds") or {}).get(key, {}),
            **(per_class.get(key, {}) if precision != "fp32" else {})}


def compare(golden: dict[str, np.ndarray], outputs: dict[str, Any]) -> dict[str, float]:
    """max |diff| over logits and embedding, the worst embedding cosine, top-1 agreement (float64)."""
    diff = max(float(np.max(np.abs(np.asarray(outputs[k], np.float64) - golden[k]))) for k in OUTPUTS)
    a, b = np.asarray(outputs["embedding"], np.float64), np.asarray(golden["embedding"], np.float64)
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    top1 = float(np.mean(np.asarray(outputs["logits"]).argmax(1) == np.asarray(golden["logits"]).argmax(1)))
    return {"max_abs_diff": diff, "min_embedding_cosine": float(cos.min()), "top1_agreement": top1}


def problems(measured: dict[str, float], tolerance: dict[str, float], golden: dict[str, np.ndarray]) -> list[str]:
    """What in `measured` breaks `tolerance` (atol + rtol x the golden outputs' magnitude,
    min_top1_agreement, min_embedding_cosine); empty when within."""
    out = []
    if "atol" in tolerance:
        ref = max(float(np.abs(golden[k]).max()) for k in OUTPUTS)
        limit = tolerance["atol"] + tolerance.get("rtol", 0.0) * ref
        if not measured["max_abs_diff"] <= limit:
            out.append(f"max |diff| {measured['max_abs_diff']:.3g} > {limit:.3g} (atol {tolerance['atol']:g} + "
                       f"rtol {tolerance.get('rtol', 0.0):g} x {ref:.3g})")
    if "min_top1_agreement" in tolerance and not measured["top1_agreement"] >= tolerance["min_top1_agreement"]:
        out.append(f"top-1 agreement {measured['top1_agreement']:.3f} < {tolerance['min_top1_agreement']:.3f}")
    if "min_embedding_cosine" in tolerance and not measured["min_embedding_cosine"] >= tolerance["min_embedding_cosine"]:
        out.append(f"embedding cosine {measured['min_embedding_cosine']:.4f} < {tolerance['min_embedding_cosine']:.4f}")
    return out


def check(key: str, golden: dict[str, np.ndarray], outputs: dict[str, Any],
          tolerance: dict[str, float] | None = None, *, precision: str = "fp32") -> dict[str, float]:
    """The measured parity of artifact `key`; raises ParityError when it breaks `tolerance`
    (default: TOLERANCE[precision])."""
    tol = TOLERANCE.get(precision, {}) if tolerance is None else tolerance
    measured = compare(golden, outputs)
    bad = problems(measured, tol, golden)
    if bad:
        raise ParityError(f"{key} differs from the golden torch outputs on {len(golden['input'])} golden inputs: "
                          + "; ".join(bad))
    return measured
