"""The temperature an export stores (manifest `temperature`): fitted on the reference FP32
artifact's val outputs, one T for plain inputs and one per test-time augmentation mode."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..formats import FORMATS


def temperature_entry(results: dict[str, Any], val_desc: str | None, recognizers: dict[str, Any] | None = None,
                      val_set=None, notes: list[str] | None = None) -> dict[str, Any] | None:
    """Temperature scaling of the in-graph probabilities, fitted on the val outputs (`results`:
    artifact key -> gate.ValResult) of the first format's reference artifact: one T for plain inputs
    (`value`) and, given its Recognizer and the val set, one per test-time augmentation mode
    (`by_tta`): averaging views softens the probabilities, so the plain T over-softens them (tiny's
    ten-crop ECE on test went 0.041 -> 0.043 with it, base's 0.036 -> 0.046). None without one."""
    from ..tta import TTA_MODES

    key = next((k for k in (f.reference_key() for f in FORMATS.values()) if k in results), None)
    if key is None:
        return None
    y = results[key].labels
    entry = {**_fitted(results[key].probabilities, y, "none", notes), "head": "in_graph",
             "fitted_on": f"{val_desc}, {key} outputs",
             "method": "golden-section search of log T minimising the val negative log-likelihood"}
    if recognizers is not None and val_set is not None:
        entry["by_tta"] = {}
        for mode in TTA_MODES[1:]:
            # The reference artifact's loaded Recognizer, serving this mode's views, uncalibrated.
            rec = copy.copy(recognizers[key])
            rec.tta, rec.temperature = mode, 1.0
            entry["by_tta"][mode] = _fitted(rec.predict_proba(val_set.images), y, mode, notes)
    return entry


def _fitted(probs: np.ndarray, y: np.ndarray, mode: str, notes: list[str] | None) -> dict[str, Any]:
    from ..calibration import T_SEARCH, apply_temperature, expected_calibration_error, fit_temperature, nll

    t = fit_temperature(probs, y)
    if notes is not None and not T_SEARCH[0] * 1.01 < t < T_SEARCH[1] * 0.99:
        notes.append(f"temperature (tta {mode}) fitted at the search bound, T = {t:g}: the val NLL has no "
                     "interior optimum (val too small or too easy?); the calibration is not meaningful")
    after = apply_temperature(probs, t)
    return {"value": t, "val_nll": {"before": round(nll(probs, y), 5), "after": round(nll(after, y), 5)},
            "val_ece": {"before": round(expected_calibration_error(probs, y), 5),
                        "after": round(expected_calibration_error(after, y), 5)}}
