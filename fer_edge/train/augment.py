"""Batched augmentation on whatever device holds the data: no per-image Python in the loop."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    rotate_deg: float = 10.0
    scale: float = 0.2  # zoom in [1 - scale, 1 + scale]
    shift: float = 0.1  # fraction of the side
    shear_deg: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    noise: float = 0.0  # std of additive Gaussian noise, in [0, 1] pixel units
    erase_p: float = 0.5  # random erasing probability
    erase_area: tuple[float, float] = (0.02, 0.2)
    # Batch mixing (`mix`): Beta(alpha, alpha) weights; 0 = off. With both on, each batch takes one
    # of the two at random. The targets become MixedTargets; a teacher sees the mixed images.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "erase_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"augment.{name} is a Beta(alpha, alpha) parameter >= 0 (0 = off), got {value!r}")
        lo, hi = self.erase_area
        if not 0 < lo <= hi < 1:
            raise InputError(f"augment.erase_area must be (min, max) fractions with 0 < min <= max < 1, got "
                             f"{self.erase_area}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown augment options {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if "erase_area" in d:
            d["erase_area"] = tuple(d["erase_area"])
        return cls(**d)


@dataclass(frozen=True)
class MixedTargets:
    """The targets of a mixed batch: image i is `lam` of class a[i] and 1 - lam of class b[i]."""

    a: torch.Tensor
    b: torch.Tensor
    lam: float


def mix(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
        gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | MixedTargets]:
    """MixUp (Zhang et al. 2018: a convex blend) or CutMix (Yun et al. 2019: a box pasted) of a
    float batch (N, 1, H, W) with a permutation of itself, as `cfg` asks; (x, y) unchanged when
    both are off. CutMix's lam is the share of pixels actually kept, after clipping the box.
    The weight and the choice of kind come from torch's global generator (saved with the run's
    RNG state), the permutation and the box from `gen`, like the rest of the augmentation."""
    kinds = [k for k, a in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if a > 0]
    if not kinds or len(x) < 2:
        return x, y
    kind = kinds[0] if len(kinds) == 1 else kinds[int(torch.rand(()) < 0.5)]
    alpha = cfg.mixup_alpha if kind == "mixup" else cfg.cutmix_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=gen, device=x.device)
    if kind == "mixup":
        return lam * x + (1 - lam) * x[perm], MixedTargets(y, y[perm], lam)
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = round(h * cut), round(w * cut)
    cy, cx = (torch.rand(2, generator=gen, device=x.device).cpu() * torch.tensor([h, w])).long().tolist()
    y0, y1 = max(cy - ch // 2, 0), min(cy + (ch + 1) // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + (cw + 1) // 2, w)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, MixedTargets(y, y[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w))


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> torch.Tensor:
    """x: (N, 1, H, W) float in [0, 1] -> augmented copy, same shape and range."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=gen)

    # One affine matrix per image (flip, rotation, shear, zoom, shift), applied in one grid_sample.
    angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
    zoom = 1 + (rand(n) * 2 - 1) * cfg.scale
    flip = torch.where(rand(n) < cfg.hflip, -1.0, 1.0)
    tx, ty = [(rand(n) * 2 - 1) * cfg.shift * 2 for _ in range(2)]  # affine_grid spans [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    row0 = [cos * flip, -sin, tx]
    if cfg.shear_deg:
        shear = torch.tan((rand(n) * 2 - 1) * math.radians(cfg.shear_deg))
        row0 = [(cos + shear * sin) * flip, -sin + shear * cos, tx]  # shear . rotation
    theta = torch.stack([torch.stack(row0, 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
    b = (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness * 0.5
    x = ((x - mean) * c + mean + b)
    if cfg.noise:
        x = x + torch.randn(x.shape, device=dev, generator=gen) * cfg.noise
    x = x.clamp(0, 1)

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


def median_filter(images: torch.Tensor, kernel: int, *, chunk: int = 2048) -> torch.Tensor:
    """Median of each kernel x kernel window, edges replicated (what cv2.medianBlur does for
    uint8 images). images: (N, 1, H, W) uint8 on any device -> same shape and dtype."""
    if kernel < 3 or kernel % 2 == 0:
        raise InputError(f"median filter kernel must be an odd size >= 3, got {kernel}")
    if images.dim() != 4 or images.shape[1] != 1 or images.dtype != torch.uint8:
        raise InputError(f"median_filter expects (N, 1, H, W) uint8 images, got {tuple(images.shape)} "
                         f"{images.dtype}")
    n, _, h, w = images.shape
    pad = kernel // 2
    out = torch.empty_like(images)
    # Chunks bound the kernel^2-times-larger unfolded copy (a GPU holds the whole set otherwise).
    for i in range(0, n, chunk):
        x = images[i : i + chunk].float()
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        windows = F.unfold(x, kernel)  # (n, k*k, H*W)
        if kernel == 3:
            med = _median9(list(windows.unbind(1)))
        else:
            med = windows.transpose(1, 2).contiguous().median(dim=2).values
        out[i : i + chunk] = med.view(-1, 1, h, w).to(torch.uint8)
    return out


# Devillard's 19-exchange median-of-9 network (opt_med9): elementwise min/max over the nine
# shifted planes, about 3x faster than a sort on a CPU.
_MED9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7), (3, 6),
         (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median9(p: list[torch.Tensor]) -> torch.Tensor:
    for i, j in _MED9:
        p[i], p[j] = torch.minimum(p[i], p[j]), torch.maximum(p[i], p[j])
    return p[4]
