"""The accuracy gate: every reduced-precision artifact is evaluated on the validation set and
refused when it loses more than allowed against its FP32 source -- in accuracy, and in macro-F1
(an INT8 model that keeps accuracy but stops recognising the rare disgust class is a real
regression: the first shipped OpenVINO INT8 kept 63.64 % accuracy while macro-F1 fell 1.7 pp).

The gate decides per artifact: one that fails is left out of the bundle (`left_out`, with the
reason) and the others ship; only `allow_drop` ships a failed artifact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formats import FORMATS


@dataclass(frozen=True)
class GateConfig:
    max_drop_pp: float = 0.5  # accuracy, percentage points below FP32
    max_f1_drop_pp: float = 1.0  # macro-F1, percentage points below FP32
    allow_drop: bool = False  # ship failed artifacts anyway (recorded loudly in the manifest and the card)


@dataclass(frozen=True)
class ValResult:
    """One artifact on val: the figures the manifest records, and the outputs the gate's agreement
    and the temperature fit read."""

    accuracy: float
    macro_f1: float
    n: int
    probabilities: np.ndarray  # (n, C), as the Recognizer served them
    labels: np.ndarray  # (n,) true class indices, in the bundle's label order

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    def figures(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n}


def evaluate_artifacts(recognizers: dict[str, Any], val_set) -> dict[str, ValResult]:
    """Each artifact's Recognizer (the real path) on val, by artifact key."""
    from ..evaluate import evaluate

    results = {}
    for key, rec in recognizers.items():
        r = evaluate(rec, val_set, "val")
        results[key] = ValResult(r["accuracy"], r["macro_f1"], r["n"], r["_probabilities"], r["_labels"])
    return results


def gate(reports: dict[str, ValResult], config: GateConfig, notes: list[str]) -> dict[str, Any]:
    """Figures for manifest.evaluation. A failed artifact is listed in accuracy_gate.left_out
    (key -> why) for the exporter to drop, unless allow_drop (then in failed_artifacts, shipped).
    Never raises: whether anything is left to ship is the exporter's question."""
    record: dict[str, Any] = {"max_drop_pp": config.max_drop_pp, "max_f1_drop_pp": config.max_f1_drop_pp,
                              "drops_pp": {}, "f1_drops_pp": {}}
    figures: dict[str, Any] = {
        "val": {k: r.figures() for k, r in reports.items()},
        "int8_agreement_val": {},
    }
    failures: list[str] = []
    failed: list[str] = []
    why: dict[str, list[str]] = {}
    for key, got in reports.items():
        fmt, precision = key.split("/")
        ref_key = FORMATS[fmt].reference_key()
        if key == ref_key:
            continue
        ref = reports.get(ref_key)
        if ref is None:  # never passed unmeasured: a converter that skips its reference is a bug
            failed.append(key)
            why[key] = [f"{key} cannot be gated: its reference {ref_key} was not built"]
            failures += why[key]
            continue
        if precision == "int8":
            figures["int8_agreement_val"][fmt] = float((ref.predictions == got.predictions).mean())
        drop = (ref.accuracy - got.accuracy) * 100
        f1_drop = (ref.macro_f1 - got.macro_f1) * 100
        record["drops_pp"][key] = round(drop, 3)
        record["f1_drops_pp"][key] = round(f1_drop, 3)
        reasons = []
        if drop > config.max_drop_pp:
            reasons.append(f"{key} val accuracy {got.accuracy:.2%} is {drop:.2f} pp below "
                           f"{ref_key} {ref.accuracy:.2%} (allowed: {config.max_drop_pp} pp)")
        if f1_drop > config.max_f1_drop_pp:
            reasons.append(f"{key} val macro-F1 {got.macro_f1:.2%} is {f1_drop:.2f} pp below "
                           f"{ref_key} {ref.macro_f1:.2%} (allowed: {config.max_f1_drop_pp} pp)")
        if reasons:
            failed.append(key)
            failures += reasons
            why[key] = reasons
    if config.allow_drop:
        notes.extend(f"ACCEPTED ACCURACY DROP (allow_drop): {f}" for f in failures)
        record["status"] = "accepted_drop" if failures else "passed"
        record["failed_artifacts"] = failed  # shipped past the gate: backend="auto" should not pick these
        record["left_out"] = {}
    else:
        notes.extend(f"LEFT OUT of the bundle by the accuracy gate: {f}" for f in failures)
        record["status"] = "partial" if failures else "passed"
        record["failed_artifacts"] = []
        record["left_out"] = {k: "; ".join(v) for k, v in why.items()}  # not shipped, and why
    record["failures"] = failures
    figures["accuracy_gate"] = record
    return figures


def skipped(manifest, config: GateConfig, notes: list[str]) -> dict[str, Any]:
    reduced = sorted({a.precision for a in manifest.artifacts} - {"fp32"})
    notes.append("no validation data given: no accuracy figures"
                 + (f"; accuracy gate SKIPPED, {'/'.join(reduced).upper()} accuracy unverified" if reduced else ""))
    return {"accuracy_gate": {"status": "skipped", "max_drop_pp": config.max_drop_pp,
                              "max_f1_drop_pp": config.max_f1_drop_pp}}
