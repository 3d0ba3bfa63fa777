"""The class list, in one place.

Index order is the sorted folder names of the FER2013 ImageFolder release, which is also the
order of every model's logits. The original Kaggle CSV numbers classes differently; its codes
are mapped here by name, never by position.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

FER2013_CSV_CODES: dict[int, str] = {
    0: "angry",
    1: "disgust",
    2: "fear",
    3: "happy",
    4: "sad",
    5: "surprise",
    6: "neutral",
}

# The CSV's `Usage` column and the split names of the ImageFolder release.
FER2013_CSV_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def relabel(labels: np.ndarray, classes: Sequence[str], model_labels: Sequence[str], *,
            whose: str = "model") -> np.ndarray:
    """A dataset's class indices (into `classes`) -> indices into a model's `model_labels`, matched
    by name; a dataset class the model does not know raises DataError."""
    model_labels = list(model_labels)
    missing = [c for c in classes if c not in model_labels]
    if missing:
        raise DataError(f"dataset classes {missing} are not among the {whose}'s labels {model_labels}")
    table = np.array([model_labels.index(c) for c in classes], dtype=np.int64)
    return table[np.asarray(labels, dtype=np.int64)]
