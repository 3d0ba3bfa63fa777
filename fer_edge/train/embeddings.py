"""Embeddings: the flattened output of a network's global-average-pool layer, taken with a forward hook.

A hook on `model.pool` (rather than calling `forward_features`) sees exactly what the classifier
sees during an ordinary forward pass, whatever a subclass does around the pool. Embeddings of a
dataset split are cached beside the checkpoint as `.npz`, keyed by the checkpoint's sha256, the
dataset's file listing and the options, so heads can be refitted without re-running the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DataError, InputError
from ..labels import relabel

CACHE_VERSION = 1


@dataclass
class EmbeddingSet:
    """Embeddings of one dataset split, aligned with its labels."""

    features: np.ndarray  # (N, F) float32
    labels: np.ndarray  # (N,) int64, indexes into `classes`
    classes: tuple[str, ...]
    checkpoint_sha256: str
    split: str | None

    def __len__(self) -> int:
        return len(self.labels)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def pool_hook(model) -> Iterator[list]:
    """Collect `model.pool`'s flattened output of every forward pass made inside the block."""
    pool = getattr(model, "pool", None)
    if pool is None:
        raise InputError(f"{type(model).__name__} has no `pool` module; embeddings need a FerNet (features, pool, "
                         "classifier)")
    captured: list = []
    handle = pool.register_forward_hook(lambda _m, _inp, out: captured.append(out.flatten(1).detach()))
    try:
        yield captured
    finally:
        handle.remove()


def forward_with_embeddings(model, images: np.ndarray, spec, *, batch_size: int = 256,
                            progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of uint8 face crops (N, H, W), preprocessed exactly as a bundle does
    (`spec`, the checkpoint's InputSpec: its median filter, if any, included)."""
    import torch

    from .preprocess import to_model_input

    if len(images) == 0:
        raise InputError("no images to embed")
    model.eval()
    logits, embeddings = [], []
    with torch.inference_mode(), pool_hook(model) as captured:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(chunk)).unsqueeze(1), spec)
            captured.clear()
            logits.append(model(x).float().numpy())
            if len(captured) != 1:
                raise InputError(f"model.pool ran {len(captured)} times in one forward pass; expected once")
            embeddings.append(captured[0].float().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    return np.concatenate(logits), np.concatenate(embeddings).astype(np.float32)


def extract_embeddings(model, images: np.ndarray, spec, *, batch_size: int = 256) -> np.ndarray:
    """(N, feature_dim) float32 embeddings of uint8 face crops (N, H, W)."""
    return forward_with_embeddings(model, images, spec, batch_size=batch_size)[1]


def _data_fingerprint(data: Path, split: str | None) -> str:
    """Names, sizes and mtimes of the files a split is read from: cheap, and changes when the data does."""
    h = hashlib.sha256()
    root = data / split if split is not None and (data / split).is_dir() else data
    if root.is_file():
        st = root.stat()
        h.update(f"{root.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _progress_printer(what: str) -> Callable[[int, int], None]:
    t0 = time.perf_counter()
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 5:
            last[0] = now
            print(f"embedding {what}: {done}/{total} images ({now - t0:.0f} s)", file=sys.stderr, flush=True)

    return show


def embed_split(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str | None, *,
                limit_per_class: int | None = None, cache_dir: str | os.PathLike | None = None,
                batch_size: int = 256, threads: int | None = None, log: Callable[[str], Any] | None = print,
                ) -> EmbeddingSet:
    """Embeddings of a dataset split through a checkpoint, cached as `.npz`.

    cache_dir: where cached embeddings live (default None: `embeddings/` beside the checkpoint;
    "" disables caching). The cache key holds the checkpoint's sha256, the dataset's file
    listing (names, sizes, mtimes), the split and limit_per_class.
    """
    checkpoint, data = Path(checkpoint), Path(data)
    if not checkpoint.is_file():
        raise InputError(f"checkpoint not found: {checkpoint}")
    if not data.exists():
        raise DataError(f"dataset not found: {data}")
    sha = file_sha256(checkpoint)
    key = {"v": CACHE_VERSION, "checkpoint_sha256": sha, "data": str(data.resolve()), "split": split,
           "limit_per_class": limit_per_class, "fingerprint": _data_fingerprint(data, split)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache = None
    if cache_dir != "":
        cache = Path(cache_dir or checkpoint.parent / "embeddings") / f"{split or 'all'}-{digest}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                if str(z["checkpoint_sha256"]) == sha:
                    if log:
                        log(f"embeddings of {data} [{split}] from cache {cache}")
                    return EmbeddingSet(z["features"], z["labels"], tuple(str(c) for c in z["classes"]), sha, split)

    from ..data import load_dataset
    from .checkpoint import input_spec, load_checkpoint

    if threads:
        import torch

        torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint)
    spec = input_spec(meta)
    faces = load_dataset(data, split, size=tuple(spec.size), limit_per_class=limit_per_class)
    _, features = forward_with_embeddings(model, faces.images, spec, batch_size=batch_size,
                                          progress=_progress_printer(f"{data.name} [{split}]") if log else None)
    labels = relabel(faces.labels, faces.classes, meta["labels"], whose="checkpoint")
    result = EmbeddingSet(features, labels, tuple(meta["labels"]), sha, split)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, features=features, labels=labels, classes=np.array(meta["labels"]),
                 checkpoint_sha256=np.array(sha), key=np.array(json.dumps(key)))
        os.replace(tmp, cache)
        if log:
            log(f"cached {features.shape[0]} x {features.shape[1]} embeddings in {cache}")
    return result
