"""Test-time augmentation views for the runtime, in numpy: the same views as the training
module's `fer_edge.train.tta` (tests compare the two), so a bundle scores what training reported.

Views are taken on the preprocessed float batch (N, 1, H, W). Multi-view modes average the
views' probabilities (as training does: softmax per view, then the mean).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .preprocess import _weights

VIEWS = {"none": 1, "flip": 2, "ten_crop": 10}  # mode -> views per crop
TTA_MODES = tuple(VIEWS)  # the one list of test-time augmentation modes
CROP = 0.9  # ten_crop's crop side, a fraction of the input side (train.tta's default)


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise InputError(f"tta must be one of {list(TTA_MODES)}, got {mode!r}")
    return mode


def num_views(mode: str) -> int:
    return VIEWS[check_mode(mode)]


def views(batch: np.ndarray, mode: str, crop: float = CROP) -> list[np.ndarray]:
    """The mode's views of a preprocessed batch, each (N, 1, H, W) float32, in train.tta's order."""
    check_mode(mode)
    if not (isinstance(batch, np.ndarray) and batch.ndim == 4):
        raise InputError(f"TTA views need a preprocessed (N, 1, H, W) batch, got {getattr(batch, 'shape', batch)}")
    if mode == "none":
        return [batch]
    if mode == "flip":
        return [batch, _flip(batch)]
    h, w = batch.shape[-2:]
    ch, cw = max(1, round(crop * h)), max(1, round(crop * w))
    tops = [0, 0, h - ch, h - ch, (h - ch) // 2]
    lefts = [0, w - cw, 0, w - cw, (w - cw) // 2]
    # Bilinear, half-pixel centres, no antialiasing: torch's F.interpolate(align_corners=False).
    wh, ww = _weights(ch, h, "bilinear"), _weights(cw, w, "bilinear")
    out = []
    for t, left in zip(tops, lefts):
        v = batch[..., t : t + ch, left : left + cw]
        if (ch, cw) != (h, w):
            v = wh @ v @ ww.T  # float32, broadcast over (N, 1)
        out += [np.ascontiguousarray(v), _flip(v)]
    return out


def stacked_views(batch: np.ndarray, mode: str) -> np.ndarray:
    """The mode's views of a batch as one (views x N, 1, H, W) batch: one backend call for all."""
    return np.concatenate(views(batch, mode))


def mean_over_views(probs: np.ndarray, mode: str) -> np.ndarray:
    """(views x N, C) probabilities of `stacked_views` -> (N, C), the views averaged."""
    n_views = num_views(mode)
    return probs.reshape(n_views, len(probs) // n_views, -1).mean(axis=0)


def _flip(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1])
