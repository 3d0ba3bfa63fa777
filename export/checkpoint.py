"""Rebuild a trained network from a fer-edge checkpoint (the format of train.loop.checkpoint_payload)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError, FerEdgeError

if TYPE_CHECKING:
    from ..train.models import FerNet

CHECKPOINT_FORMAT = "fer-edge-checkpoint"  # == train.loop.CHECKPOINT_FORMAT; not imported to keep this light
REQUIRED = ("arch", "labels", "input", "model")
# Resume state that is of no use after training; dropped from the returned metadata.
TRAINING_ONLY = ("model", "optimizer", "scheduler", "plateau", "rng", "torch_rng")


def load_checkpoint(path: str | os.PathLike) -> tuple[FerNet, dict[str, Any]]:
    """Return (network in eval mode on the CPU, checkpoint metadata without the weights)."""
    import torch

    from ..train.models import create_model

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        # weights_only: a checkpoint is data; never run pickled code from a file handed to an exporter.
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
