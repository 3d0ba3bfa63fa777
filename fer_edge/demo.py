"""Run a model on the sample faces shipped in the package and time it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).parent / "samples"


def sample_faces() -> list[Path]:
    """48x48 FER2013 test-split faces: the first three files of each class folder (a rule that
    does not depend on any model), named <label>_<original id>.jpg."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))


def demo(model: str | os.PathLike | None = None, backend: str = "auto", *, precision: str = "auto",
         threads: int | None = None, repeats: int = 20):
    from .data import read_image
    from .recognizer import Recognizer

    rec = Recognizer(model, backend, precision=precision, threads=threads)
    rows = []
    for path in sample_faces():
        image = read_image(path)
        pred = rec.predict(image)  # also warms the backend up for this shape
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec.predict(image)
            times.append(time.perf_counter() - t0)
        rows.append({"image": path.name, "expected": path.name.split("_", 1)[0], "label": pred.label,
                     "score": pred.score, "ms": float(np.median(times) * 1000)})
    return rows, rec
