"""Load a local pretrained state_dict (torchvision ImageNet layout, or a fer-edge checkpoint) into a FerNet.

Nothing is downloaded: the file is one the user has. Key matching, in order:
* the same key (VGG: torchvision's `features.N.*` are ours);
* `features.` + key (ResNet: torchvision's `conv1.weight`, `layer1.0.bn1.bias` sit under our trunk).
A first convolution stored with 3 input channels is adapted to a 1-channel model by summing its
RGB filters: for a gray image given to the net as R = G = B, that is exactly the same response.
Tensors whose shape does not fit (ImageNet's 1000-class classifier, torchvision VGG's 25088-wide
`classifier.0`) and keys with no counterpart are skipped and logged. The trunk must load
completely: a file that leaves any `features.*` tensor at random init (the plain, non-BN VGG
weights for a BN model, another architecture) raises InputError, since a half-random frozen trunk
would train silently wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

log = logging.getLogger("fer_edge.train")

TRUNK = "features."
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # common containers around a state_dict


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, unwrapped from {"state_dict": ...} / a fer-edge checkpoint,
    with DataParallel's `module.` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pretrained weights not found: {path} (expected a local torch state_dict file, "
                         "e.g. torchvision's resnet18-f37072fd.pth)")
    try:
        # weights_only: a weights file is data; never run pickled code from it.
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable torch state_dict ({type(e).__name__}: {str(e)[:300]})") from e
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected a dict of tensors (a state_dict), got {type(obj).__name__}")
    tensors = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: holds no tensors; expected a state_dict such as torchvision's")
    return tensors


def _fit(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """(tensor shaped like dst, note) or (None, why not)."""
    if src.shape == dst.shape:
        return src, ""
    if src.dim() == 4 and dst.dim() == 4 and src.shape[1] == 3 and dst.shape[1] == 1 and \
            (src.shape[0], *src.shape[2:]) == (dst.shape[0], *dst.shape[2:]):
        return src.sum(dim=1, keepdim=True), "RGB filters summed to 1 channel"
    return None, f"shape {tuple(src.shape)} != model's {tuple(dst.shape)}"


def match_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(to_load {model key: tensor}, adapted {model key: note}, skipped {file key: reason})."""
    target = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    adapted: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for key, src in tensors.items():
        dst_key = next((k for k in (key, TRUNK + key) if k in target), None)
        if dst_key is None:
            skipped[key] = "no such tensor in the model"
            continue
        fitted, note = _fit(src, target[dst_key])
        if fitted is None:
            skipped[key] = note
            continue
        to_load[dst_key] = fitted.to(target[dst_key].dtype)
        if note:
            adapted[dst_key] = note
    return to_load, adapted, skipped


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load what fits from `path` into `model`; returns the report (also logged)."""
    tensors = read_state_dict(path)
    to_load, adapted, skipped = match_state_dict(model, tensors)
    arch = getattr(model, "arch", type(model).__name__)
    if not to_load:
        sample = ", ".join(list(tensors)[:4])
        raise InputError(f"{path}: none of its {len(tensors)} tensors fits {arch} (file keys like {sample}; "
                         f"expected torchvision-style keys such as {', '.join(list(model.state_dict())[:2])})")
    trunk_missing = [k for k in model.state_dict() if k.startswith(TRUNK) and k not in to_load]
    if trunk_missing:
        raise InputError(
            f"{path}: loads only part of {arch}'s trunk; {len(trunk_missing)} tensors would stay random "
            f"(e.g. {', '.join(trunk_missing[:4])}); skipped from the file: "
            f"{_summary(skipped)}. For vgg16/vgg19 use the BatchNorm weights (vgg16_bn / vgg19_bn)")
    model.load_state_dict(to_load, strict=False)
    report = {"path": str(path), "loaded": sorted(to_load), "adapted": adapted, "skipped": skipped}
    log.info("pretrained %s: loaded %d of %d model tensors from %s%s; skipped %d file tensors: %s",
             arch, len(to_load), len(model.state_dict()), path,
             "".join(f"; {k}: {v}" for k, v in adapted.items()), len(skipped), _summary(skipped))
    return report


def _summary(skipped: dict[str, str], n: int = 6) -> str:
    items = [f"{k} ({v})" for k, v in list(skipped.items())[:n]]
    more = len(skipped) - n
    return ", ".join(items) + (f" and {more} more" if more > 0 else "") if items else "none"
