"""Record evaluation figures (e.g. the test split) into a finished bundle's manifest and card.

The manifest itself is not hashed, but the model card is: both are rewritten together and the
file hashes refreshed, so the bundle stays verifiable.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


def record_cpu_class(bundle_dir: str | os.PathLike, cpu_class: str, entry: dict[str, Any]) -> None:
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
