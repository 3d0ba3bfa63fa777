"""Scores -> probabilities: the one softmax, in numpy, used by the runtime heads, the fitted heads,
the exporter's head references and the training reports."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) scores, float32 out (computed in the input's precision)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))  # exp of the largest term is 1: no overflow
    e /= e.sum(axis=1, keepdims=True)  # in place: one array fewer on the one-crop path
    return e if e.dtype == np.float32 else e.astype(np.float32)
