"""Golden tensors: a few inputs and the torch FP32 outputs on them, stored in the bundle so any
runtime on any device can later prove it still computes what the exporter computed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError

GOLDEN_DIR = "golden"
# Per precision, how far an artifact may be from the torch FP32 outputs on the golden inputs.
# INT8 is judged by direction (embedding cosine) and top-1, not by value; the export also records
# per-artifact thresholds from what it measured (manifest golden.thresholds), which take precedence.
TOLERANCE = {
    "fp32": {"atol": 1e-4, "rtol": 1e-4},
    "fp16": {"atol": 1e-2, "rtol": 1e-2},
    "int8": {"min_embedding_cosine": 0.9, "min_top1_agreement": 0.75},
}


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


def compare(golden: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """How an artifact's outputs on golden['input'] differ from the golden outputs."""
    diff = max(float(np.max(np.abs(outputs[k] - golden[k]))) for k in ("logits", "embedding"))
    a, b = outputs["embedding"], golden["embedding"]
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    top1 = float(np.mean(outputs["logits"].argmax(1) == golden["logits"].argmax(1)))
    return {"max_abs_diff": diff, "min_embedding_cosine": float(cos.min()), "top1_agreement": top1}
