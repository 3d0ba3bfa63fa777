"""The checkpoint contract, owned here: the format (`CHECKPOINT_FORMAT`), how training writes a
checkpoint, how anyone (training, reports, export) reads one back, and the `InputSpec` it implies.

Training layer, but torch is imported inside the functions that need it, so the exporter can import
this module (and `input_spec`) without loading torch. docs/architecture.md, "Checkpoints".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ExportError, FerEdgeError, InputError

if TYPE_CHECKING:
    from ..preprocess import InputSpec
    from .config import TrainConfig
    from .models import FerNet

CHECKPOINT_FORMAT = "fer-edge-checkpoint"
REQUIRED = ("arch", "labels", "input", "model")
# Resume state that is of no use after training; dropped from the returned metadata.
TRAINING_ONLY = ("model", "optimizer", "scheduler", "plateau", "rng", "torch_rng")


def checkpoint_payload(model: FerNet, cfg: TrainConfig, weights: dict | None = None, **extra: Any) -> dict[str, Any]:
    """The dict `best.pt` / `last.pt` hold (`extra`: epoch, val figures, command, resume state).
    `weights` replaces the model's own state (the EMA's average, when that is what was validated)."""
    from .._version import __version__
    from ..labels import EMOTIONS
    from .models import count_params

    return {
        "format": CHECKPOINT_FORMAT,
        "fer_edge": __version__,
        "arch": model.arch,
        "num_classes": len(EMOTIONS),
        "labels": list(EMOTIONS),
        "feature_dim": model.feature_dim,
        "params": count_params(model),
        "input": cfg.input_spec,
        "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in (model.state_dict() if weights is None else weights).items()},
        **extra,
    }


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file and rename, so a kill never leaves a half-written checkpoint."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> tuple[FerNet, dict[str, Any]]:
    """Return (network in eval mode on the CPU, checkpoint metadata without the weights).

    Raises ExportError (the error export has always raised; callers in training re-wrap it) for a
    file that is not a readable fer-edge checkpoint whose weights fit its architecture."""
    import torch

    from .models import create_model

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        # weights_only: a checkpoint is data; never run pickled code from a file handed to us.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e)[:300]})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ExportError(f"{path}: not a fer-edge checkpoint (format={found!r}, expected {CHECKPOINT_FORMAT!r}); "
                          "export takes the best.pt or last.pt written by `fer-edge train`")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ExportError(f"{path}: checkpoint lacks {missing}")
    labels = payload["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise ExportError(f"{path}: labels must be a non-empty list of strings, got {labels!r}")
    try:
        model = create_model(payload["arch"], num_classes=len(labels))
        model.load_state_dict(payload["model"], strict=True)
    except FerEdgeError as e:
        raise ExportError(f"{path}: {e}") from e
    except (RuntimeError, KeyError, TypeError) as e:
        raise ExportError(f"{path}: weights do not fit architecture {payload['arch']!r} with {len(labels)} "
                          f"classes: {str(e)[:500]}") from e
    model.eval()
    meta = {k: v for k, v in payload.items() if k not in TRAINING_ONLY}
    meta.setdefault("feature_dim", model.feature_dim)
    meta.setdefault("params", sum(p.numel() for p in model.parameters()))
    return model, meta


def input_spec(source: Any, *, error: type[FerEdgeError] = InputError) -> InputSpec:
    """The InputSpec a network was trained on, from a checkpoint's metadata (its `input` entry),
    that `input` dict itself, a TrainConfig, or an InputSpec (returned as is). The one place a
    checkpoint's `input` is parsed; a malformed one raises `error`."""
    from ..preprocess import InputSpec

    if isinstance(source, InputSpec):
        return source
    inp = getattr(source, "input_spec", source)  # a TrainConfig's property is the checkpoint's `input`
    if isinstance(inp, Mapping) and isinstance(inp.get("input"), Mapping):  # checkpoint metadata
        inp = inp["input"]
    if not isinstance(inp, Mapping):
        raise error(f"expected a checkpoint, its 'input' dict, a TrainConfig or an InputSpec, "
                    f"got {type(source).__name__}")

    def floats(v: Any) -> tuple[float, ...]:
        return tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))

    try:
        size = inp.get("size", (48, 48))
        size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        return InputSpec(size=size, scale=float(inp.get("scale", 1 / 255)), mean=floats(inp.get("mean", 0.0)),
                         std=floats(inp.get("std", 1.0)), median=int(inp.get("median", 0) or 0))
    except Exception as e:
        raise error(f"checkpoint input entry {dict(inp)!r} is not a valid input spec: {e}") from e
