"""Which training images each epoch visits, drawn on the device in one call per epoch.

Every DistributedDataParallel rank draws the same indices from the same generator state and then
takes its own share of each batch, so the ranks never need to exchange index lists.
"""

from __future__ import annotations

from typing import Callable

import torch

Sampler = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
SAMPLERS: dict[str, Sampler] = {}


def register_sampler(name: str):
    def wrap(fn: Sampler) -> Sampler:
        SAMPLERS[name] = fn
        return fn

    return wrap


@register_sampler("random")
def random_order(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """A fresh permutation: every image at most once per epoch (the first `count`)."""
    return torch.randperm(len(labels), device=labels.device, generator=gen)[:count]


@register_sampler("balanced")
def class_balanced(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Draw with replacement so each class is equally likely; rare classes (FER2013's 'disgust'
    has 436 of 28,709 train images) repeat, frequent ones are subsampled."""
    counts = torch.bincount(labels)
    weights = 1.0 / counts.clamp(min=1).double()[labels]
    return torch.multinomial(weights, count, replacement=True, generator=gen)


def epoch_indices(labels: torch.Tensor, steps: int, batch: int, gen: torch.Generator, mode: str) -> torch.Tensor:
    """(steps, batch) image indices for one epoch."""
    return SAMPLERS[mode](labels, steps * batch, gen).view(steps, batch)


def rank_share(batch_indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's slice of a global batch (interleaved, so shares differ by at most one image)."""
    return batch_indices[rank::world]
