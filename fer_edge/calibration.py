"""Temperature scaling: probabilities a user can threshold.

One temperature T is fitted on validation outputs at export (minimising the negative
log-likelihood) and stored in the manifest; the runtime applies it to the head's probabilities:
p_T = softmax(log p / T). For the in-graph head this is softmax(logits / T) exactly, and for any T
the argmax is unchanged. Numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BundleError, InputError

EPS = 1e-12
ECE_BINS = 15


def check_temperature(temperature: float) -> float:
    """T as a float, or InputError unless it is a positive finite number (math, not numpy: this
    runs on every one-crop call)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be positive and finite, got {temperature!r}")
    return float(temperature)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), row by row; T = 1 returns `probs` unchanged."""
    temperature = check_temperature(temperature)
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, EPS, None)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(probs.dtype, copy=False)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, None)).mean())


T_SEARCH = (0.05, 20.0)  # fit_temperature's bounds: a fit at either one found no interior optimum


def fit_temperature(probs: np.ndarray, y: np.ndarray, *, lo: float = T_SEARCH[0], hi: float = T_SEARCH[1]) -> float:
    """The T minimising the NLL of apply_temperature(probs, T) on labels y: a golden-section search
    on log T (the NLL is convex in 1/T), good to ~1e-4 relative."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if probs.ndim != 2 or len(probs) != len(y) or len(y) == 0:
        raise InputError(f"fit_temperature needs (N, C) probabilities and N labels, got {probs.shape} and {y.shape}")
    f = lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), y)  # noqa: E731
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-5:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return round(float(np.exp((a + b) / 2)), 5)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the confidence-weighted gap between top-1 confidence and accuracy over `bins` equal-width
    confidence bins (Guo et al. 2017)."""
    probs, y = np.asarray(probs), np.asarray(y)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def manifest_temperature(manifest, head_name: str, tta: str = "none") -> float:
    """The temperature a bundle asks for with this head and test-time augmentation mode: the mode's
    own (`temperature.by_tta`) where the export fitted one, else the plain one (bundles exported
    before per-mode temperatures); 1.0 when none is stored for the head."""
    entry = manifest.temperature
    if not isinstance(entry, dict) or entry.get("head", "in_graph") != head_name:
        return 1.0
    value, where = entry.get("value"), "temperature.value"
    by_tta = entry.get("by_tta") or {}
    if tta != "none" and isinstance(by_tta, dict) and tta in by_tta:
        mode = by_tta[tta]
        value, where = (mode.get("value") if isinstance(mode, dict) else mode), f"temperature.by_tta.{tta}.value"
    try:
        return check_temperature(value)
    except InputError:
        raise BundleError(f"manifest {where} must be a positive number, got {value!r}") from None
