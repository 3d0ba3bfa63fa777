"""Batched augmentation on whatever device holds the data: no per-image Python in the loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    rotate_deg: float = 10.0
    scale: float = 0.2  # zoom in [1 - scale, 1 + scale]
    shift: float = 0.1  # fraction of the side
    brightness: float = 0.2
    contrast: float = 0.2
    erase_p: float = 0.5  # random erasing probability
    erase_area: tuple[float, float] = (0.02, 0.2)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """x: (N, 1, H, W) float in [0, 1] -> augmented copy, same shape and range."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=gen)

    angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
    zoom = 1 + (rand(n) * 2 - 1) * cfg.scale
    flip = torch.where(rand(n) < cfg.hflip, -1.0, 1.0)
    tx, ty = [(rand(n) * 2 - 1) * cfg.shift * 2 for _ in range(2)]  # affine_grid spans [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
    b = (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness * 0.5
    x = ((x - mean) * c + mean + b).clamp(0, 1)

    if cfg.erase_p > 0:
        area = cfg.erase_area[0] + rand(n) * (cfg.erase_area[1] - cfg.erase_area[0])
        aspect = torch.exp((rand(n) * 2 - 1) * math.log(3))
        eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
        ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
        y0 = rand(n) * (h - eh)
        x0 = rand(n) * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = (ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) & (xs >= x0.view(n, 1, 1)) & (
            xs < (x0 + ew).view(n, 1, 1)
        )
        box &= (rand(n) < cfg.erase_p).view(n, 1, 1)
        x = torch.where(box.unsqueeze(1), rand(n, 1, h, w), x)
    return x
