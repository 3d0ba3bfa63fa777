"""Add an ncnn artifact to a finished bundle, converted from the ONNX it already ships.

For a bundle whose torch checkpoint is gone, so `export_bundle` cannot rebuild it (the packaged
`base`: its checkpoint was never brought back): the FP32 ONNX when the bundle ships one, else its
QDQ INT8 ONNX dequantized (export/qdq2fp32.py: the shipped weights in FP32 arithmetic). The new
artifact passes the same checks as an exported one: golden inputs (thresholds recorded from what is
measured, as for INT8, when it comes from INT8 weights), the accuracy gate on val against the
FP32 figures recorded at export, `verify`. Built in a hidden folder and moved into place whole.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import AccuracyDropError, ExportError
from ..formats import FORMATS
from ..manifest import Artifact
from .card import model_card
from .golden import read_golden
from .onnx2ncnn import STORAGE, onnx2ncnn, _version
from .sampling import load_faces
from .stages import move_into_place, stage_dir
from .steps import thresholds as _thresholds


def add_ncnn(bundle_dir: str | Path, *, val: Any, precision: str = "fp16", command: str | None = None,
             threads: int | None = 1) -> dict[str, Any]:
    """Convert, check, gate and add `ncnn/<precision>` to the bundle at `bundle_dir`; returns the
    figures recorded (golden, val, gate). Raises ExportError (AccuracyDropError past the gate)."""
    from ..bundle import Bundle, write_manifest
    from ..recognizer import Recognizer
    from ..verify import verify

    out = Path(bundle_dir)
    bundle = Bundle.open(out)
    m = bundle.manifest
    key = f"ncnn/{precision}"
    if m.artifact("ncnn", precision) is not None:
        raise ExportError(f"{out} already ships {key}")
    source = m.artifact("onnx", "fp32") or m.artifact("onnx", "int8")
    if source is None:
        raise ExportError(f"{out} ships no ONNX artifact to convert from")
    ref = (m.evaluation.get("val") or {}).get("onnx/fp32")
    if not ref:
        raise ExportError(f"{out} records no onnx/fp32 val figures to gate {key} against")
    val_set, val_desc = load_faces(val)
    stage = stage_dir(out)
    try:
        shutil.copytree(out, stage, dirs_exist_ok=True)
        _convert(bundle, source, stage, precision)
        m.artifacts.append(Artifact("ncnn", precision, FORMATS["ncnn"].path(precision)))
        write_manifest(stage, m)
        rec = Recognizer(bundle=Bundle.open(stage), backend="ncnn", precision=precision, threads=threads)
        measured, thresholds = _golden(rec, stage, m, key, from_int8=source.precision == "int8")
        got, drop, f1_drop = _gate(rec, val_set, ref, m.evaluation.get("accuracy_gate") or {}, key)
        _record(m, key, precision, source, got, drop, f1_drop, val_desc, threads, command)
        (stage / "MODEL_CARD.md").write_text(model_card(m, m.extra.get("training") or {}))
        write_manifest(stage, m)
        report = verify(Bundle.open(stage))
        if not report.ok:
            raise ExportError("the bundle with ncnn fails verification: "
                              + "; ".join(f"{c.name}: {c.detail}" for c in report.failed))
        move_into_place(stage, out, True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    Bundle.open(out)
    return {"golden": measured, "thresholds": thresholds, "val": m.evaluation["val"][key],
            "drop_pp": drop, "f1_drop_pp": f1_drop}


def _convert(bundle, source, stage: Path, precision: str) -> None:
    with tempfile.TemporaryDirectory(prefix="fer-edge-ncnn-") as tmp:
        src = bundle.artifact_path(source)
        if source.precision == "int8":
            from .qdq2fp32 import qdq2fp32

            src = qdq2fp32(src, Path(tmp) / "model.fp32.onnx")
        onnx2ncnn(src, stage / FORMATS["ncnn"].path(precision), precision=precision)


def _golden(rec, stage: Path, m, key: str, *, from_int8: bool) -> tuple[dict, dict]:
    """The golden inputs through the new artifact: (measured, thresholds), recorded in m.golden."""
    from ..parity import compare, problems

    golden = read_golden(stage, m.golden)
    measured = compare(golden, rec.backbone(golden["input"]))
    thresholds = _thresholds({key: measured}, len(golden["input"]))[key]
    if from_int8:  # INT8 weights: as far from torch FP32 as the INT8 artifact is
        thresholds["atol"] = round(max(2 * measured["max_abs_diff"], 0.01), 4)
        thresholds["rtol"] = 0.0
    else:
        bad = problems(measured, (m.golden.get("tolerance") or {}).get(key.split("/")[1], {}), golden)
        if bad:
            raise ExportError(f"{key} on the golden inputs: " + "; ".join(bad))
    m.golden.setdefault("measured", {})[key] = measured
    m.golden.setdefault("thresholds", {})[key] = thresholds
    return measured, thresholds


def _gate(rec, val_set, ref: dict, gate: dict, key: str) -> tuple[dict, float, float]:
    """Val figures of the new artifact and its drops against the recorded onnx/fp32 ones."""
    from ..evaluate import evaluate

    got = evaluate(rec, val_set, "val")
    drop = round((ref["accuracy"] - got["accuracy"]) * 100, 3)
    f1_drop = round((ref["macro_f1"] - got["macro_f1"]) * 100, 3)
    max_drop, max_f1 = gate.get("max_drop_pp", 0.5), gate.get("max_f1_drop_pp", 1.0)
    if drop > max_drop or f1_drop > max_f1:
        raise AccuracyDropError(f"{key} val accuracy {got['accuracy']:.2%} / macro-F1 {got['macro_f1']:.2%} is "
                                f"{drop:.2f} / {f1_drop:.2f} pp below onnx/fp32 (allowed: {max_drop} / {max_f1} pp)")
    return got, drop, f1_drop


def _record(m, key: str, precision: str, source, got: dict, drop: float, f1_drop: float, val_desc: str,
            threads: int | None, command: str | None) -> None:
    """The new artifact's val figures, gate drops, provenance and producer versions in the manifest."""
    m.evaluation.setdefault("val", {})[key] = {"accuracy": got["accuracy"], "macro_f1": got["macro_f1"], "n": got["n"]}
    gate = m.evaluation.get("accuracy_gate") or {}
    gate.setdefault("drops_pp", {})[key] = drop
    gate.setdefault("f1_drops_pp", {})[key] = f1_drop
    m.evaluation["accuracy_gate"] = gate
    export = m.extra.setdefault("export", {})
    export["artifacts"] = sorted({*export.get("artifacts", []), key})
    export["ncnn"] = {"source": f"{source.key()}" + (" dequantized (export/qdq2fp32.py)" if source.precision == "int8"
                                                     else ""), "validation": val_desc, "threads": threads,
                      "storage": STORAGE[precision]}
    if command:
        m.extra.setdefault("commands", {})["add_ncnn"] = command
    m.producer.update({"pnnx": _version("pnnx"), "ncnn": _version("ncnn")})
