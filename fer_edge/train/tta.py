"""Predictions with test-time augmentation (none, flip, ten-crop), pure torch.

Shared by the training loop (validation each epoch) and by checkpoint evaluation. Multi-view
modes average the views' softmax probabilities and return their log, which is a valid set of
logits: softmax(log p) = p.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import InputError
from .checkpoint import input_spec
from .preprocess import to_model_input

Views = Callable[[torch.Tensor, float], list[torch.Tensor]]
TTA_VIEWS: dict[str, Views] = {}


def register_views(name: str):
    def wrap(fn: Views) -> Views:
        TTA_VIEWS[name] = fn
        return fn

    return wrap


@register_views("none")
def _plain(x: torch.Tensor, crop: float) -> list[torch.Tensor]:
    return [x]


@register_views("flip")
def _flip(x: torch.Tensor, crop: float) -> list[torch.Tensor]:
    return [x, x.flip(-1)]


@register_views("ten_crop")
def _ten_crop(x: torch.Tensor, crop: float) -> list[torch.Tensor]:
    """Four corner crops and the centre crop, each scaled back to the input size so any network
    (also one with a fixed input) sees the size it was trained on, plus their mirror images."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(crop * h)), max(1, round(crop * w))
    tops = [0, 0, h - ch, h - ch, (h - ch) // 2]
    lefts = [0, w - cw, 0, w - cw, (w - cw) // 2]
    views = []
    for t, left in zip(tops, lefts):
        v = x[..., t : t + ch, left : left + cw]
        if (ch, cw) != (h, w):
            v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        views += [v, v.flip(-1)]
    return views


def view_logits(model: torch.nn.Module, x: torch.Tensor, mode: str = "none", crop: float = 0.9) -> torch.Tensor:
    """Logits of one normalised float batch (N, 1, H, W) under a TTA mode, in float32."""
    views = _views(x, mode, crop)
    if len(views) == 1:
        return model(views[0]).float()
    probs = sum(F.softmax(model(v).float(), dim=1) for v in views) / len(views)
    return torch.log(probs.clamp_min(1e-12))


def view_embeddings(model: torch.nn.Module, x: torch.Tensor, mode: str = "none", crop: float = 0.9) -> torch.Tensor:
    """The pooled embedding (`forward_features`) averaged over the TTA mode's views, float32."""
    views = _views(x, mode, crop)
    return sum(model.forward_features(v).float() for v in views) / len(views)


OUTPUTS = {"logits": view_logits, "embedding": view_embeddings}


def _views(x: torch.Tensor, mode: str, crop: float) -> list[torch.Tensor]:
    if mode not in TTA_VIEWS:
        raise InputError(f"TTA mode must be one of {sorted(TTA_VIEWS)}, got {mode!r}")
    return TTA_VIEWS[mode](x, crop)


def ten_crop_logits(model: torch.nn.Module, x: torch.Tensor, crop: float = 0.9) -> torch.Tensor:
    return view_logits(model, x, "ten_crop", crop)


@torch.no_grad()
def predict_tta(model: torch.nn.Module, images_uint8, cfg_or_input: Any, mode: str = "none", *, crop: float = 0.9,
                batch: int = 256, channels_last: bool = False, amp: bool = False,
                output: str = "logits") -> torch.Tensor:
    """Logits (N, C) float32 on the CPU for uint8 faces (N, H, W) or (N, 1, H, W), numpy or torch;
    with output="embedding", the pooled embeddings (N, F) averaged over the views instead.

    `cfg_or_input` is the TrainConfig, the checkpoint's `input` dict or an InputSpec; its median
    filter (if any) and normalisation are applied here, so pass raw images. The model runs in eval mode on its
    own device; `amp` runs it under bf16 autocast (CUDA)."""
    spec = input_spec(cfg_or_input)
    if mode not in TTA_VIEWS:
        raise InputError(f"TTA mode must be one of {sorted(TTA_VIEWS)}, got {mode!r}")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {sorted(OUTPUTS)}, got {output!r}")
    x = torch.as_tensor(images_uint8)
    if x.dtype != torch.uint8:
        raise InputError(f"predict_tta expects uint8 images, got {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != spec.size:
        raise InputError(f"predict_tta expects gray images (N, {spec.size[0]}, {spec.size[1]}) or "
                         f"(N, 1, ...), got {tuple(x.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    try:
        for i in range(0, len(x), batch):
            xb = to_model_input(x[i : i + batch].to(device), spec)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                out.append(OUTPUTS[output](model, xb, mode, crop).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        raise InputError("predict_tta got no images")
    return torch.cat(out)
