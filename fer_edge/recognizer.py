"""Recognizer: bundle -> backend -> preprocess -> backbone -> probabilities -> Prediction."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .bundle import Bundle
from .errors import BundleError, InputError
from .preprocess import preprocess
from .types import Prediction

MAX_CHUNK = 256  # bounds memory for very large predict_batch calls


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Recognizer:
    """Recognise facial expressions in face crops.

    model: None (the packaged default), a packaged model name, or a bundle folder / zip.
    backend: "auto" (best usable backend here; `describe()` says which and why) or a name
      ("onnxruntime", "openvino"); an explicit backend never falls back to another.
    precision: "auto" (INT8 where the bundle ships it, else FP32) or "fp32" / "int8".
    threads: fix the backend's thread count (e.g. 1 to compare latency at one core).
    """

    def __init__(self, model: str | os.PathLike | None = None, backend: str = "auto", *, precision: str = "auto",
                 threads: int | None = None, device: str | None = None, strict: bool = False,
                 bundle: Bundle | None = None) -> None:
        from .runtimes import select_backend  # lazy: keeps `import fer_edge` numpy-only

        if bundle is not None and model is not None:
            raise InputError("pass either model= or bundle=, not both")
        self.bundle = bundle if bundle is not None else Bundle.open(model)
        m = self.bundle.manifest
        if m.head.get("kind") != "in_graph":
            raise BundleError(f"bundle {m.name!r}: head kind {m.head.get('kind')!r} is not supported by this version")
        self.spec = m.input
        self.labels = tuple(m.labels)
        self._outputs = m.model["outputs"]
        self._selection = select_backend(self.bundle, backend, precision=precision, threads=threads, device=device,
                                         strict=strict)

    @property
    def manifest(self):
        return self.bundle.manifest

    @property
    def backend(self) -> str:
        return self._selection.name

    @property
    def precision(self) -> str:
        return self._selection.precision

    def describe(self) -> dict[str, Any]:
        s = self._selection
        return {"model": self.manifest.name, "source": str(self.bundle.source), "backend": s.name,
                "precision": s.precision, "artifact": str(s.path), "reason": s.reason, "skipped": s.skipped,
                **{k: v for k, v in s.backend.describe().items() if k != "backend"}}

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._selection.backend.run(batch)

    def predict_proba(self, crops: Sequence[Any]) -> np.ndarray:
        """(N, num_classes) probabilities for a list of crops (or an N x H x W[x C] uint8 array)."""
        batch = preprocess(crops, self.spec)
        out = [self._run(batch[i : i + MAX_CHUNK])[self._outputs["logits"]] for i in range(0, len(batch), MAX_CHUNK)]
        return softmax(np.concatenate(out).astype(np.float32))

    def embed(self, crops: Sequence[Any]) -> np.ndarray:
        """(N, feature_dim) pooled embeddings (the input of tree or linear heads)."""
        batch = preprocess(crops, self.spec)
        key = self._outputs["embedding"]
        return np.concatenate([self._run(batch[i : i + MAX_CHUNK])[key] for i in range(0, len(batch), MAX_CHUNK)])

    def predict_batch(self, crops: Sequence[Any]) -> list[Prediction]:
        probs = self.predict_proba(crops)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[b], float(p[b]), p, self.labels) for b, p in zip(best, probs)]

    def predict(self, crop: Any) -> Prediction:
        """One face crop: uint8 HxW gray, HxWx3 BGR or HxWx4 BGRA, any size."""
        return self.predict_batch([crop])[0]

    __call__ = predict

    def __repr__(self) -> str:
        return f"Recognizer({self.manifest.name!r}, backend={self.backend!r}, precision={self.precision!r})"
