"""Evaluation reports of a trained run: the torch model (with and without test-time augmentation),
its embedding heads, a JSON report and PNG plots.

Plots: training curves (a run's metrics.jsonl), confusion matrix, one-vs-rest ROC curves, and
histograms of pairwise distances between L2-normalised embeddings of same-class and
different-class pairs (as in FaceNet, the triplet-loss paper). matplotlib is imported lazily
through its object-oriented API (no pyplot global state), so reports also work headless.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, RuntimeUnavailableError, install_hint
from ..jsonfile import read_json
from ..labels import relabel
from ..metrics import classification_report, one_vs_rest_roc, roc_auc, scores_report  # noqa: F401 (re-exported)
from ..probabilities import softmax
from ..tta import TTA_MODES



def pairwise_distances(embeddings: np.ndarray, labels: np.ndarray, *, max_samples: int = 2000, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(same-class, different-class) Euclidean distances between L2-normalised embeddings of all
    pairs among at most `max_samples` randomly drawn rows."""
    embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise InputError(f"embeddings must be (N, F) with N = len(labels) = {len(labels)}, got {embeddings.shape}")
    if len(labels) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), max_samples, replace=False))
        embeddings, labels = embeddings[keep], labels[keep]
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sq = np.maximum(2.0 - 2.0 * (e @ e.T), 0.0)
    i, j = np.triu_indices(len(labels), k=1)
    d = np.sqrt(sq[i, j])
    same = labels[i] == labels[j]
    return d[same], d[~same]


def distance_summary(same: np.ndarray, different: np.ndarray) -> dict[str, Any]:
    """Mean distances and the AUC of 'closer means same class' (0.5: embeddings ignore the class)."""
    if len(same) == 0 or len(different) == 0:
        return {"pairs_same": len(same), "pairs_different": len(different), "pair_auc": None}
    y = np.r_[np.ones(len(same)), np.zeros(len(different))]
    return {"pairs_same": int(len(same)), "pairs_different": int(len(different)),
            "mean_same": float(same.mean()), "mean_different": float(different.mean()),
            "pair_auc": roc_auc(y, -np.r_[same, different])}


# ---- plots -------------------------------------------------------------------------------------------------

def _figure(width: float = 6.0, height: float = 4.5):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RuntimeUnavailableError(f"plots need matplotlib: {install_hint('train')}") from e
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_training_curves(metrics_jsonl: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch from a run's metrics.jsonl (train loss; train and val accuracy)."""
    rows = []
    for n, line in enumerate(Path(metrics_jsonl).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{metrics_jsonl}:{n}: not a JSON line: {e}") from e
    if not rows:
        raise InputError(f"{metrics_jsonl}: no epochs recorded")
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key in ("train_loss", "val_loss"):
        if any(key in r for r in rows):
            loss_ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker=".", label=key.replace("_", " "))
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in ("train_accuracy", "val_accuracy", "val_macro_f1"):
        if any(key in r for r in rows):
            acc_ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker=".", label=key.replace("_", " "))
    acc_ax.set(xlabel="epoch", ylabel="fraction", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion(cm: np.ndarray | list, labels: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalised confusion matrix (colour = recall share), counts written in the cells."""
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = _figure(6.5, 5.5)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j] * 100:.0f}%", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_roc(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], path: str | os.PathLike,
             title: str = "") -> Path:
    roc = one_vs_rest_roc(y_true, scores, len(labels))
    fig = _figure(6, 5.5)
    ax = fig.subplots()
    for name, (fpr, tpr), auc in zip(labels, roc["curves"], roc["auc"]):
        if auc is not None:
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    macro = roc["macro_auc"]
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=(title or "one-vs-rest ROC") + (f", macro AUC {macro:.3f}" if macro is not None else ""))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_distances(embeddings: np.ndarray, labels: np.ndarray, path: str | os.PathLike, title: str = "",
                   *, max_samples: int = 2000, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Histograms of same-class vs different-class pairwise distances; returns the summary too."""
    same, diff = pairwise_distances(embeddings, labels, max_samples=max_samples, seed=seed)
    summary = distance_summary(same, diff)
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    bins = np.linspace(0, 2, 61)
    ax.hist(diff, bins=bins, density=True, alpha=0.55, label=f"different class ({len(diff)} pairs)")
    ax.hist(same, bins=bins, density=True, alpha=0.55, label=f"same class ({len(same)} pairs)")
    auc = summary["pair_auc"]
    ax.set(xlabel="Euclidean distance of L2-normalised embeddings", ylabel="density",
           title=(title or "pairwise distances") + (f", pair AUC {auc:.3f}" if auc is not None else ""))
    ax.legend()
    return _save(fig, path), summary


# ---- evaluation of a checkpoint ------------------------------------------------------------------------------

def _tta_logits(model, images: np.ndarray, meta: dict[str, Any], spec, mode: str) -> np.ndarray:
    try:
        from .tta import predict_tta
    except ImportError as e:
        raise RuntimeUnavailableError(f"test-time augmentation {mode!r} needs fer_edge.train.tta, which this "
                                      f"installation lacks ({e})") from e
    return np.asarray(predict_tta(model, images, meta["input"], mode), dtype=np.float32)


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str | None = "test", *,
                        tta: str = "none", limit_per_class: int | None = None, batch_size: int = 256,
                        threads: int | None = None, plots: str | os.PathLike | None = None,
                        log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Evaluate the torch model of a checkpoint on a dataset split, in the format of
    `fer_edge.evaluate.evaluate_matrix` (runs keyed "torch/fp32", plus "torch/fp32+<tta>" when
    `tta` is not "none"), with one-vs-rest AUCs and the pairwise-distance summary of the
    embeddings. Images are preprocessed by the bundle's own numpy code, so figures equal the
    exported FP32 bundle's on the same images. `plots`: a folder for the PNGs.
    """
    if tta not in TTA_MODES:
        raise InputError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    from ..data import load_dataset
    from .checkpoint import input_spec, load_checkpoint
    from .embeddings import forward_with_embeddings

    if threads:
        import torch

        torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint)
    spec = input_spec(meta)
    labels = list(meta["labels"])
    faces = load_dataset(data, split, size=tuple(spec.size), limit_per_class=limit_per_class)
    y = relabel(faces.labels, faces.classes, labels, whose="checkpoint")
    t0 = time.perf_counter()
    logits, embeddings = forward_with_embeddings(model, faces.images, spec,
                                                 batch_size=batch_size)
    scores = {"torch/fp32": (softmax(logits), time.perf_counter() - t0)}
    if tta != "none":
        t0 = time.perf_counter()
        scores[f"torch/fp32+{tta}"] = (softmax(_tta_logits(model, faces.images, meta, spec, tta)),
                                       time.perf_counter() - t0)
    runs = {}
    for key, (probs, seconds) in scores.items():
        runs[key] = {**scores_report(y, probs, labels), "backend": "torch", "precision": "fp32", "tta": key.partition(
            "+")[2] or "none", "model": meta["arch"], "split": split, "seconds": round(seconds, 3)}
    result = {"model": meta["arch"], "source": str(checkpoint), "data": str(data), "split": split,
              "checkpoint_val": {k: meta["val"][k] for k in ("accuracy", "macro_f1") if k in (meta.get("val") or {})},
              "runs": runs, "agreement": {}}
    if len(runs) == 2:
        (a, pa), (b, pb) = [(k, v[0].argmax(1)) for k, v in scores.items()]
        result["agreement"][f"{b} vs {a}"] = float((pa == pb).mean())
    if plots is not None:
        result["plots"], result["distances"] = _evaluation_plots(Path(plots), runs, scores, y, embeddings, labels)
    else:
        result["distances"] = distance_summary(*pairwise_distances(embeddings, y))
    result["_embeddings"], result["_labels"] = embeddings, y
    result["_scores"] = {key: probs for key, (probs, _) in scores.items()}
    return result


def _evaluation_plots(folder: Path, runs: dict, scores: dict, y: np.ndarray, embeddings: np.ndarray,
                      labels: list[str]) -> tuple[list[str], dict[str, Any]]:
    written = []
    for key, r in runs.items():
        stem = key.replace("/", "_").replace("+", "_")
        written.append(plot_confusion(r["confusion_matrix"], labels, folder / f"confusion_{stem}.png",
                                      f"{key}: accuracy {r['accuracy'] * 100:.2f} %"))
        written.append(plot_roc(y, scores[key][0], labels, folder / f"roc_{stem}.png", key))
    path, summary = plot_distances(embeddings, y, folder / "distances.png", "embedding distances")
    written.append(path)
    return [str(p) for p in written], summary


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a result (drops arrays kept for callers under '_' keys)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


# ---- the run report ------------------------------------------------------------------------------------------

def make_report(run: str | os.PathLike, data: str | os.PathLike, split: str | None = "test", *,
                tta: str = "none", out: str | os.PathLike | None = None, limit_per_class: int | None = None,
                batch_size: int = 256, threads: int | None = None, command: str | None = None) -> dict[str, Any]:
    """report.json + PNGs for a training run (a run folder with best.pt, or a checkpoint file):
    the torch model on `split` (and with `tta`), every head in RUN/heads/*/ evaluated on the same
    embeddings (research-only heads: their recorded figures), training curves, distance
    histograms, and the best head by val accuracy (the in-graph classifier included)."""
    from .head_fitting import load_fitted_head

    run = Path(run)
    checkpoint = run if run.is_file() else run / "best.pt"
    run_dir = checkpoint.parent
    out = Path(out) if out is not None else run_dir / "report"
    result = evaluate_checkpoint(checkpoint, data, split, tta=tta, limit_per_class=limit_per_class,
                                 batch_size=batch_size, threads=threads, plots=out)
    embeddings, y = result.pop("_embeddings"), result.pop("_labels")
    labels = result["runs"]["torch/fp32"]["labels"]
    heads: dict[str, Any] = {}
    for head_json in sorted(run_dir.glob("heads/*/head.json")):
        folder = head_json.parent
        meta = read_json(head_json, error=InputError)
        entry = {"kind": meta.get("kind"), "folder": str(folder), "val": meta.get("val"),
                 "exportable": meta.get("exportable"), "params": meta.get("params")}
        if meta.get("model"):
            head, meta = load_fitted_head(folder)
            if meta["num_features"] != embeddings.shape[1]:
                entry["error"] = f"head expects {meta['num_features']} features, the checkpoint gives {embeddings.shape[1]}"
            else:
                r = scores_report(y, head.scores(embeddings), labels)
                entry[split or "all"] = {k: r[k] for k in ("n", "accuracy", "macro_f1", "macro_auc")}
                entry["report"] = r
                cm_path = plot_confusion(r["confusion_matrix"], labels, out / f"confusion_head_{folder.name}.png",
                                         f"{folder.name} head: accuracy {r['accuracy'] * 100:.2f} %")
                result.setdefault("plots", []).append(str(cm_path))
        else:
            entry["recorded"] = {k: meta[k] for k in ("val", "test") if k in meta}
        heads[folder.name] = entry
    result["heads"] = heads
    val_figures = {"in_graph": (result.get("checkpoint_val") or {}).get("accuracy")}
    val_figures.update({name: (h.get("val") or {}).get("accuracy") for name, h in heads.items()})
    ranked = sorted(((v, k) for k, v in val_figures.items() if v is not None), reverse=True)
    result["best_head"] = {"name": ranked[0][1], "val_accuracy": ranked[0][0]} if ranked else None
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        result.setdefault("plots", []).append(str(plot_training_curves(metrics, out / "training_curves.png")))
    result["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(public(result), indent=2))
    result["report_json"] = str(out / "report.json")
    return result
