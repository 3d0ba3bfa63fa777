"""Result types."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # probability of `label`
    probs: np.ndarray  # (num_classes,) probabilities, aligned with `labels`
    labels: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 6),
                "probs": {name: round(float(p), 6) for name, p in zip(self.labels, self.probs)}}

    def __repr__(self) -> str:
        return f"Prediction(label={self.label!r}, score={self.score:.3f})"
