"""Which crops the exporter calibrates INT8 on: up to CALIB_SIZE drawn at random from the
calibration (or validation) data."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ExportError

# Calibration crops; fewer is allowed but recorded as a warning. 1000 (not 300): with 300 the
# H200 tiny's OpenVINO INT8 lost more macro-F1 (benchmarks/int8_calibration.py).
CALIB_SIZE = 1000


def load_faces(source: Any):
    """(FaceSet, description) from a FaceSet or a dataset path (its val split)."""
    from ..data import FaceSet, load_dataset

    if isinstance(source, FaceSet):
        return source, f"in-memory FaceSet ({len(source)} images)"
    faces = load_dataset(source, "val")
    return faces, f"{source} (val split, {len(faces)} images)"


def calibration_batch(calib: Any, val_set, val_desc, spec, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from ..data import FaceSet
    from ..preprocess import preprocess

    if calib is None:
        if val_set is None:
            raise ExportError("INT8 needs calibration crops: pass calib= (or val=, whose images are used)")
        images, desc = val_set.images, val_desc
    elif isinstance(calib, np.ndarray):
        images, desc = calib, f"array {calib.shape} {calib.dtype}"
    elif isinstance(calib, FaceSet):
        images, desc = calib.images, f"in-memory FaceSet ({len(calib)} images)"
    else:
        faces, desc = load_faces(calib)
        images = faces.images
    n = len(images)
    # Random, not the first N: dataset folders are sorted by class, so the first 300 are one class.
    index = np.sort(np.random.default_rng(0).permutation(n)[:CALIB_SIZE])
    chosen = images[index]
    if n < CALIB_SIZE:
        notes.append(f"INT8 calibrated on only {n} crops (at least {CALIB_SIZE} recommended)")
    if chosen.dtype == np.float32 and chosen.ndim == 4:
        if tuple(chosen.shape[1:]) != (1, *spec.size):
            raise ExportError(f"preprocessed calibration batch has shape {chosen.shape}; the model takes "
                              f"(N, 1, {spec.size[0]}, {spec.size[1]})")
        batch = np.ascontiguousarray(chosen)
    else:
        batch = preprocess(chosen, spec)
    return batch, {"source": desc, "n": int(len(batch)), "selection": "random, seed 0"}
