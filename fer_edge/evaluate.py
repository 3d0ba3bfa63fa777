"""Evaluate a bundle (through a Recognizer) on a labelled dataset."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .calibration import apply_temperature, expected_calibration_error
from .data import FaceSet, load_dataset
from .labels import relabel
from .metrics import classification_report


def evaluate(recognizer, data: FaceSet | str | os.PathLike, split: str | None = "test", *,
             batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class figures and the confusion matrix.

    The dataset's classes are matched to the model's labels by name.
    """
    faces = data if isinstance(data, FaceSet) else load_dataset(data, split)
    labels = list(recognizer.labels)
    y_true = relabel(faces.labels, faces.classes, labels)
    t0 = time.perf_counter()
    probs = np.concatenate([recognizer.predict_proba(faces.images[i : i + batch_size])
                            for i in range(0, len(faces), batch_size)])
    seconds = time.perf_counter() - t0
    report = classification_report(y_true, probs.argmax(1), labels)
    temperature = float(getattr(recognizer, "temperature", 1.0))
    report.update(backend=recognizer.backend, precision=recognizer.precision, model=recognizer.manifest.name,
                  data=str(data) if not isinstance(data, FaceSet) else "FaceSet", split=split,
                  seconds=round(seconds, 3), tta=getattr(recognizer, "tta", "none"), temperature=temperature,
                  # ECE of the probabilities as served, and of the same outputs before temperature
                  # scaling (undone exactly: softmax(T log p_T) = p).
                  ece=expected_calibration_error(probs, y_true),
                  ece_uncalibrated=expected_calibration_error(apply_temperature(probs, 1 / temperature), y_true))
    report["_predictions"] = probs.argmax(1)  # for agreement checks; dropped before JSON output
    report["_probabilities"] = probs  # for fitting a temperature at export
    report["_labels"] = y_true
    return report


def agreement(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Fraction of images on which two evaluations of the same data predict the same class."""
    return float((a["_predictions"] == b["_predictions"]).mean())


def public(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _expand(value: str, choices: list[str]) -> list[str]:
    if value == "all":
        return choices
    return [v.strip() for v in value.split(",") if v.strip()]


# How far a bundle's recorded figures may move when re-measured on another x86 CPU; recorded in the
# manifest beside the figures, and what evaluate and the tests compare with. FP32 is the same
# arithmetic up to summation order (a few images). INT8 kernels differ between CPUs (VNNI or not,
# each runtime's own code paths): re-measuring the packaged model's FER2013 test figures on an Intel
# Xeon (AVX-512 VNNI) instead of the AMD EPYC (AVX2) they were recorded on moved OpenVINO INT8's
# macro-F1 by +0.31 pp, its accuracy by +0.03 pp and its top-1 agreement with FP32 from 96.07 % to
# 98.44 %; ONNX Runtime INT8 did not move. The bounds below leave about 3x that room.
CROSS_CPU_TOLERANCE = {
    "fp32": {"accuracy": 0.001, "macro_f1": 0.002, "plus_images": 2},
    "fp16": {"accuracy": 0.005, "macro_f1": 0.01, "plus_images": 2},
    "int8": {"accuracy": 0.01, "macro_f1": 0.01, "plus_images": 2},
    "min_int8_agreement": 0.95,
}


def compare_with_recorded(result: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """Each run's accuracy and macro-F1 against the bundle's recorded figures for the same data and
    split, within CROSS_CPU_TOLERANCE (+ plus_images / n, for small sets); {} when none are recorded."""
    if not recorded or not recorded.get("runs"):
        return {}
    out: dict[str, Any] = {"cpu": (recorded.get("machine") or {}).get("cpu", "not recorded"), "runs": {}}
    for key, run in result["runs"].items():
        want = recorded["runs"].get(key)
        if want is None or want.get("n") != run["n"]:
            continue
        tol = CROSS_CPU_TOLERANCE.get(key.split("/")[-1], CROSS_CPU_TOLERANCE["int8"])
        slack = tol["plus_images"] / max(run["n"], 1)
        out["runs"][key] = {
            metric: {"recorded": want[metric], "measured": run[metric], "delta": run[metric] - want[metric],
                     "tolerance": tol[metric] + slack, "within": abs(run[metric] - want[metric]) <= tol[metric] + slack}
            for metric in ("accuracy", "macro_f1")}
    floor = CROSS_CPU_TOLERANCE["min_int8_agreement"]
    out["agreement"] = {k: {"measured": v, "recorded": (recorded.get("agreement") or {}).get(k), "min": floor,
                            "within": v >= floor} for k, v in result["agreement"].items()}
    out["within"] = all(m["within"] for r in out["runs"].values() for m in r.values()) and all(
        a["within"] for a in out["agreement"].values())
    return out


def evaluate_matrix(model: str | os.PathLike | None, data: str | os.PathLike, split: str | None = "test", *,
                    backends: str = "auto", precisions: str = "auto", threads: int | None = None,
                    limit_per_class: int | None = None, tta: str = "none") -> dict[str, Any]:
    """Evaluate one bundle with several backends and precisions on the same images.

    tta: the Recognizer's test-time augmentation ("none", "flip", "ten_crop").
    backends / precisions: "auto", "all" (everything the bundle holds and this machine runs) or
    a comma list. Reports INT8-vs-FP32 top-1 agreement for each backend that ran both.
    """
    from .bundle import Bundle
    from .formats import FORMATS
    from .recognizer import Recognizer
    from .runtimes import BACKENDS

    bundle = Bundle.open(model)
    faces = load_dataset(data, split, size=tuple(bundle.manifest.input.size), limit_per_class=limit_per_class)
    in_bundle = {FORMATS[a.format].backend for a in bundle.manifest.artifacts}
    backend_list = _expand(backends, [b for b in BACKENDS if b in in_bundle and BACKENDS[b].probe().usable])
    runs: dict[str, dict[str, Any]] = {}
    for backend in backend_list:
        if precisions == "all" and backend != "auto":
            fmt = BACKENDS[backend].format if backend in BACKENDS else None
            precision_list = [a.precision for a in bundle.manifest.artifacts if a.format == fmt]
        else:
            precision_list = _expand(precisions, [])
        for precision in precision_list:
            rec = Recognizer(bundle=bundle, backend=backend, precision=precision, threads=threads, tta=tta)
            runs[f"{rec.backend}/{rec.precision}"] = evaluate(rec, faces, split)
    agreements = {}
    for key, r in runs.items():
        backend, precision = key.split("/")
        ref = runs.get(f"{backend}/fp32")
        if precision != "fp32" and ref is not None:
            agreements[f"{backend} {precision} vs fp32"] = agreement(r, ref)
    result = {"model": bundle.manifest.name, "source": str(bundle.source), "data": str(data), "split": split,
              "tta": tta, "shipped_figures": bundle.manifest.evaluation,
              "runs": {k: public(v) for k, v in runs.items()}, "agreement": agreements}
    if limit_per_class is None:  # recorded figures are of the whole split
        key = f"{os.path.basename(os.path.normpath(str(data)))}/{split}" + ("" if tta == "none" else f"/tta={tta}")
        result["vs_recorded"] = compare_with_recorded(result, bundle.manifest.evaluation.get(key))
    return result
