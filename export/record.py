"""Record evaluation figures (e.g. the test split) into a finished bundle's manifest and card.

The manifest itself is not hashed, but the model card is: both are rewritten together and the
file hashes refreshed, so the bundle stays verifiable.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..formats import FORMATS
from ..errors import BundleError


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The part of an evaluate_matrix result worth keeping in a manifest."""
    runs = {
        key: {
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "macro_precision": r["macro_precision"],
            "macro_recall": r["macro_recall"], "n": r["n"],
            "per_class_recall": {c: v["recall"] for c, v in r["per_class"].items()},
            **{k: r[k] for k in ("tta", "temperature", "ece", "ece_uncalibrated") if k in r},
        }
        for key, r in result["runs"].items()
    }
    return {"data": result["data"], "split": result["split"], "tta": result.get("tta", "none"), "runs": runs,
            "agreement": result["agreement"]}


def record_evaluation(bundle_dir: str | os.PathLike, result: dict[str, Any], *, command: str,
                      key: str | None = None) -> str:
    """Store `result` (from fer_edge.evaluate.evaluate_matrix) under manifest.evaluation[key]."""
    from ..bundle import Bundle, write_manifest
    from .card import model_card

    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: figures can only be recorded into a bundle folder, not a zip")
    bundle = Bundle.open(root)
    m = bundle.manifest
    # One entry per TTA mode: "fer2013/test" (plain), "fer2013/test/tta=flip", ...
    tta = result.get("tta", "none")
    key = key or f"{Path(str(result['data'])).name}/{result['split']}" + ("" if tta == "none" else f"/tta={tta}")
    from ..evaluate import CROSS_CPU_TOLERANCE
    from ..runtimes.machine import machine_info

    # INT8 figures depend on the CPU's kernels: say which CPU, and how far another may move them
    m.evaluation[key] = {**summarize(result), "command": command,
                         "date": datetime.now(timezone.utc).date().isoformat(), "machine": machine_info(),
                         "tolerance_across_cpus": CROSS_CPU_TOLERANCE}
    training = m.extra.get("training") or {}
    (root / "MODEL_CARD.md").write_text(model_card(m, training))
    write_manifest(root, m)
    Bundle.open(root)
    return key


def record_cpu_speed(bundle_dir: str | os.PathLike, cpu_class: str, entry: dict[str, Any]) -> None:
    """Store one CPU class's speed figures (from a peers run: `benchmarks/record_cpu_classes.py`)
    under manifest.extra["cpu_classes"][cpu_class] and rewrite the card, which says from them which
    model to pick on that class."""
    from ..bundle import Bundle, write_manifest
    from .card import model_card

    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: figures can only be recorded into a bundle folder, not a zip")
    m = Bundle.open(root).manifest
    m.extra.setdefault("cpu_classes", {})[cpu_class] = entry
    (root / "MODEL_CARD.md").write_text(model_card(m, m.extra.get("training") or {}))
    write_manifest(root, m)
    Bundle.open(root)


def record_cpu_class(bundle_dir: str | os.PathLike, run: dict[str, Any], *, cls: str, machine: dict[str, Any],
                     command: str, date: str) -> dict[str, Any]:
    """Store one model's whole-split figures and golden parity measured on another CPU class (`run`:
    one model of tools/arm64/measure.py's output) beside the x86 ones, and that class's verdict:
    - evaluation["<data>/<split>@<cls>"]: the figures, as `record_evaluation` keeps them;
    - evaluation.accuracy_gate.cpu_classes[cls]: each artifact's accuracy and macro-F1 drop against the
      figures recorded for the same split (x86), under the bundle's own gate bounds; what fails them
      is listed in `failed_artifacts`, which `auto` does not choose on that class;
    - golden.cpu_classes[cls]: the golden parity measured there and the INT8 thresholds verify applies
      there (the exporter's rule: measured agreement less two inputs, cosine less 0.02).
    Returns the class's gate entry."""
    from ..bundle import Bundle, write_manifest
    from .card import model_card
    from .steps import thresholds

    if run.get("limit_per_class") is not None:
        raise BundleError("only whole-split figures are recorded into a bundle, not a slice")
    root = Path(bundle_dir)
    bundle = Bundle.open(root)
    m = bundle.manifest
    key = f"{Path(str(run['data'])).name}/{run['split']}"
    reference = m.evaluation.get(key) or {}
    if not reference.get("runs"):
        raise BundleError(f"{root}: no recorded {key} figures to compare the {cls} figures with")
    m.evaluation[f"{key}@{cls}"] = {**summarize(run), "command": command, "date": date, "machine": machine}
    gate = m.evaluation.setdefault("accuracy_gate", {})
    max_drop, max_f1 = gate.get("max_drop_pp", 0.5), gate.get("max_f1_drop_pp", 1.0)
    backend_format = {f.backend: k for k, f in FORMATS.items()}
    drops, f1_drops, failed = {}, {}, []
    for run_key, figures in run["runs"].items():
        want = reference["runs"].get(run_key)
        if want is None or want.get("n") != figures["n"]:
            continue
        backend, precision = run_key.split("/")
        art = f"{backend_format.get(backend, backend)}/{precision}"
        drops[art] = round((want["accuracy"] - figures["accuracy"]) * 100, 3)
        f1_drops[art] = round((want["macro_f1"] - figures["macro_f1"]) * 100, 3)
        if drops[art] > max_drop or f1_drops[art] > max_f1:
            failed.append(art)
    verdict = {"reference": f"{key} ({(reference.get('machine') or {}).get('arch', 'x86_64')})",
               "measured": f"{key}@{cls}", "max_drop_pp": max_drop, "max_f1_drop_pp": max_f1,
               "drops_pp": drops, "f1_drops_pp": f1_drops, "failed_artifacts": sorted(failed),
               "status": "failed" if failed else "passed", "date": date}
    gate.setdefault("cpu_classes", {})[cls] = verdict
    n = int(m.golden.get("n") or 32)
    m.golden.setdefault("cpu_classes", {})[cls] = {"measured": run["golden"],
                                                  "thresholds": thresholds(run["golden"], n),
                                                  "command": command, "date": date}
    (root / "MODEL_CARD.md").write_text(model_card(m, m.extra.get("training") or {}))
    write_manifest(root, m)
    Bundle.open(root)
    return verdict
