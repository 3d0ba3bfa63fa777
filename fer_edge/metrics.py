"""Classification metrics in numpy: accuracy, per-class and macro precision/recall/F1, confusion."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # macro averages over classes that occur in y_true
    return {
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC: (false-positive rates, true-positive rates, thresholds), from (0, 0) upwards.

    y_true holds 0/1 (or booleans); tied scores move the curve diagonally, as in scikit-learn.
    """
    y_true = np.asarray(y_true).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true and scores differ in length: {y_true.shape} vs {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], dtype=np.int64)
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    pos, neg = y.sum(), len(y) - y.sum()
    tpr = np.r_[0.0, tps / pos] if pos else np.full(len(tps) + 1, np.nan)
    fpr = np.r_[0.0, fps / neg] if neg else np.full(len(fps) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the binary ROC curve (trapezoids); NaN when y_true holds only one class."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def one_vs_rest_roc(y_true: np.ndarray, scores: np.ndarray, num_classes: int) -> dict:
    """Per-class one-vs-rest ROC curves and AUCs of (N, C) class scores; `macro_auc` averages the
    classes that occur in y_true (and not in all of it). Undefined AUCs are None (JSON null)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    if scores.ndim != 2 or scores.shape != (len(y_true), num_classes):
        raise ValueError(f"scores must be (N, {num_classes}) with N = len(y_true) = {len(y_true)}, "
                         f"got {scores.shape}")
    curves, aucs = [], []
    for k in range(num_classes):
        fpr, tpr, _ = roc_curve(y_true == k, scores[:, k])
        auc = roc_auc(y_true == k, scores[:, k])
        curves.append((fpr, tpr))
        aucs.append(None if np.isnan(auc) else auc)
    defined = [a for a in aucs if a is not None]
    return {"auc": aucs, "macro_auc": float(np.mean(defined)) if defined else None, "curves": curves}


def scores_report(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> dict:
    """classification_report of argmax(scores) plus one-vs-rest AUC per class and its macro mean."""
    report = classification_report(y_true, scores.argmax(1), labels)
    roc = one_vs_rest_roc(y_true, scores, len(labels))
    report["auc"] = dict(zip(labels, roc["auc"]))
    report["macro_auc"] = roc["macro_auc"]
    return report
