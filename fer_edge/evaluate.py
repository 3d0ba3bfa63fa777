"""Evaluate a bundle (through a Recognizer) on a labelled dataset."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .calibration import apply_temperature, expected_calibration_error
from .data import FaceSet, load_dataset
from .errors import DataError
from .metrics import classification_report


def evaluate(recognizer, data: FaceSet | str | os.PathLike, split: str | None = "test", *,
             batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class figures and the confusion matrix.

    The dataset's classes are matched to the model's labels by name.
    """
    faces = data if isinstance(data, FaceSet) else load_dataset(data, split)
    labels = list(recognizer.labels)
    missing = [c for c in faces.classes if c not in labels]
    if missing:
        raise DataError(f"dataset classes {missing} are not among the model's labels {labels}")
    y_true = np.array([labels.index(faces.classes[i]) for i in faces.labels])
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
    return {"model": bundle.manifest.name, "source": str(bundle.source), "data": str(data), "split": split,
            "tta": tta,
            "shipped_figures": bundle.manifest.evaluation,
            "runs": {k: public(v) for k, v in runs.items()}, "agreement": agreements}
