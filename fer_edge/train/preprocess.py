"""The torch twin of `fer_edge.preprocess`: a checkpoint's InputSpec applied to uint8 faces that
already have the network's size (median filter, scale, mean, std in that order, in float32, as the
numpy code does), so training, TTA and embeddings see exactly what a bundle feeds its graph.
tests/test_checkpoint.py holds the two to equality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from .augment import median_filter

if TYPE_CHECKING:
    from ..preprocess import InputSpec


def scale(x_uint8: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Pixel values -> float32 times spec.scale (the range augmentation works in)."""
    return x_uint8.float() * spec.scale


def standardise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Scaled float images -> (x - mean) / std, the network's input."""
    return (x - spec.mean[0]) / spec.std[0]


def to_model_input(x_uint8: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(N, 1, H, W) uint8 faces at spec.size, on any device -> the network's float32 input."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 or x_uint8.shape[1] != 1:
        raise InputError(f"expected uint8 faces (N, 1, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    if tuple(x_uint8.shape[-2:]) != tuple(spec.size):
        raise InputError(f"expected faces of the network's size {tuple(spec.size)}, got {tuple(x_uint8.shape[-2:])}")
    if spec.median:
        x_uint8 = median_filter(x_uint8, spec.median)
    return standardise(scale(x_uint8, spec), spec)
