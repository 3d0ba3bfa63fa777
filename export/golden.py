"""Golden tensors: a few inputs and the torch FP32 outputs on them, stored in the bundle so any
runtime on any device can later prove it still computes what the exporter computed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..parity import TOLERANCE

GOLDEN_DIR = "golden"
# The per-precision golden tolerance is fer_edge.parity.TOLERANCE (one owner: export and verify).
N_GOLDEN = 32  # golden inputs: enough for a top-1 agreement that means something for INT8


def write_golden(root: str | os.PathLike, model: Any, inputs: np.ndarray, *,
                 crops: np.ndarray | None = None) -> dict[str, Any]:
    """Save golden/{input,logits,embedding}.npy (and the raw uint8 crops, when given, so the
    preprocessing can be checked too). Returns the manifest's `golden` entry."""
    import torch

    from ..train.models import WithEmbedding

    root = Path(root)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    net = model if isinstance(model, WithEmbedding) else WithEmbedding(model)
    was_training = model.training  # the wrapper is new (training=True); the caller's mode is the model's
    net.eval()
    try:
        with torch.no_grad():
            logits, embedding = (t.numpy() for t in net(torch.from_numpy(inputs)))
    finally:
        model.train(was_training)
    arrays = {"input": inputs, "logits": logits, "embedding": embedding}
    if crops is not None:
        arrays["crops"] = np.ascontiguousarray(crops, dtype=np.uint8)
    (root / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        rel = f"{GOLDEN_DIR}/{name}.npy"
        np.save(root / rel, array, allow_pickle=False)
        files[name] = rel
    return {"source": "torch fp32", "n": len(inputs), "files": files, "tolerance": TOLERANCE}


def read_golden(root: str | os.PathLike, golden: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Load the golden arrays of a bundle folder (files named by the manifest entry when given)."""
    root = Path(root)
    files = (golden or {}).get("files") or {p.stem: f"{GOLDEN_DIR}/{p.name}"
                                            for p in sorted((root / GOLDEN_DIR).glob("*.npy"))}
    if not files:
        raise BundleError(f"{root}: no golden tensors")
    try:
        return {name: np.load(root / rel, allow_pickle=False) for name, rel in files.items()}
    except (OSError, ValueError) as e:
        raise BundleError(f"{root}: unreadable golden tensors: {e}") from e


def select_golden(stage: Path, model, spec, val_set, calib) -> dict[str, Any]:
    """Golden inputs: real crops when there are any (noise makes near-constant logits)."""
    from ..preprocess import preprocess

    rng = np.random.default_rng(0)
    if val_set is not None:
        crops = val_set.images[np.sort(rng.permutation(len(val_set))[:N_GOLDEN])]
        return write_golden(stage, model, preprocess(crops, spec), crops=crops)
    if calib is not None:
        return write_golden(stage, model, calib[:N_GOLDEN])
    return write_golden(stage, model, rng.standard_normal((N_GOLDEN, 1, *spec.size)).astype(np.float32))
