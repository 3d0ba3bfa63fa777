"""Figures and golden tolerances per CPU class (issue 24): INT8 kernels differ between x86 and arm64,
so a bundle may state arm64's own INT8 thresholds and gate verdict, verify applies the class it runs
on, and `auto` never serves an artifact that failed the gate on this machine's class. Runs on any
CPU: the class is set by patching platform.machine()."""

from __future__ import annotations

import json
import shutil

import pytest

from fer_edge.bundle import Bundle, resolve_model
from fer_edge.parity import isa_family, tolerance_for


def test_cpu_class_names_the_instruction_family():
    assert isa_family("x86_64") == isa_family("AMD64") == "x86_64"
    assert isa_family("aarch64") == isa_family("arm64") == "arm64"
    assert isa_family("riscv64") == "riscv64"


def test_tolerance_per_class_overrides_int8_only():
    golden = {"tolerance": {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "int8": {"min_top1_agreement": 0.75}},
              "thresholds": {"onnx/int8": {"min_top1_agreement": 0.84, "min_embedding_cosine": 0.97}},
              "cpu_classes": {"arm64": {"thresholds": {"onnx/int8": {"min_top1_agreement": 0.8},
                                                       "onnx/fp32": {"atol": 1.0}}}}}
    assert tolerance_for(golden, "onnx/int8", "int8", "x86_64") == {"min_top1_agreement": 0.84,
                                                                    "min_embedding_cosine": 0.97}
    assert tolerance_for(golden, "onnx/int8", "int8", "arm64") == {"min_top1_agreement": 0.8,
                                                                   "min_embedding_cosine": 0.97}
    assert tolerance_for(golden, "onnx/fp32", "fp32", "arm64") == {"atol": 1e-4, "rtol": 1e-4}  # FP32 stays tight


def _arm64_run(bundle: Bundle, drop: float) -> dict:
    """A whole-split run as tools/arm64/measure.py writes it: the recorded x86 figures, INT8 `drop` lower."""
    recorded = bundle.manifest.evaluation["fer2013/test"]
    runs = {}
    for key, r in recorded["runs"].items():
        d = drop if key.endswith("/int8") else 0.0
        runs[key] = {**r, "accuracy": r["accuracy"] - d, "macro_f1": r["macro_f1"] - d,
                     "macro_precision": r["macro_precision"], "macro_recall": r["macro_recall"],
                     "per_class": {c: {"recall": v} for c, v in r["per_class_recall"].items()}}
    measured = bundle.manifest.golden["measured"]
    golden = {k: {**v, "top1_agreement": v["top1_agreement"] - (0.0625 if k.endswith("int8") else 0)}
              for k, v in measured.items()}
    return {"model": bundle.manifest.name, "data": "../shared/datasets/fer2013", "split": "test", "tta": "none",
            "limit_per_class": None, "runs": runs, "agreement": recorded["agreement"], "golden": golden}


@pytest.fixture
def tiny_copy(tmp_path):
    dst = tmp_path / "tiny"
    shutil.copytree(resolve_model("tiny"), dst)
    return dst


def _record(path, drop):
    from fer_edge.export.record import record_cpu_class

    return record_cpu_class(path, _arm64_run(Bundle.open(path), drop), cls="arm64",
                            machine={"arch": "aarch64", "note": "test"}, command="test", date="2026-12-03")


def test_arm64_figures_within_the_gate_are_recorded_beside_x86(tiny_copy):
    verdict = _record(tiny_copy, drop=0.002)
    assert verdict["status"] == "passed" and verdict["failed_artifacts"] == []
    assert verdict["drops_pp"]["onnx/int8"] == pytest.approx(0.2) and verdict["drops_pp"]["onnx/fp32"] == 0
    m = Bundle.open(tiny_copy).manifest  # hashes refreshed: the bundle still opens
    assert "fer2013/test@arm64" in m.evaluation and m.evaluation["fer2013/test"]["runs"]  # x86 figures kept
    arm = m.golden["cpu_classes"]["arm64"]
    want = round(m.golden["measured"]["onnx/int8"]["top1_agreement"] - 0.0625 - 2 / 32, 4)
    assert arm["thresholds"]["onnx/int8"]["min_top1_agreement"] == pytest.approx(want)
    assert "onnx/fp32" not in arm["thresholds"]
    assert "On arm64 CPUs" in (tiny_copy / "MODEL_CARD.md").read_text()


def test_auto_avoids_int8_that_failed_the_gate_on_this_class(tiny_copy, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fer_edge.runtimes.selection import failed_on_cpu_class, gate_failures
    from fer_edge.recognizer import Recognizer

    verdict = _record(tiny_copy, drop=0.01)  # 1 pp: beyond the 0.5 pp gate
    assert verdict["status"] == "failed" and "onnx/int8" in verdict["failed_artifacts"]
    bundle = Bundle.open(tiny_copy)
    assert failed_on_cpu_class(bundle, "arm64") >= {"onnx/int8"} and not failed_on_cpu_class(bundle, "x86_64")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert "onnx/int8" not in gate_failures(bundle)
    assert Recognizer(tiny_copy, backend="onnxruntime").precision == "int8"
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert "onnx/int8" in gate_failures(bundle)
    assert Recognizer(tiny_copy, backend="onnxruntime").precision == "fp32"
    # explicit is explicit: asked for, the INT8 artifact still loads
    assert Recognizer(tiny_copy, backend="onnxruntime", precision="int8").precision == "int8"


def test_verify_applies_the_thresholds_of_the_class_it_runs_on(tiny_copy, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fer_edge.verify import verify

    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    # an arm64 threshold no real output can meet: only a run that takes the arm64 class fails on it
    manifest["golden"]["cpu_classes"] = {"arm64": {"thresholds": {"onnx/int8": {"min_top1_agreement": 1.01}}}}
    (tiny_copy / "manifest.json").write_text(json.dumps(manifest))

    def int8_check():
        return next(c for c in verify(tiny_copy).checks if c.name == "artifact onnx/int8")

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    check = int8_check()
    assert check.status == "passed" and "export tolerance, on x86_64" in check.detail
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    check = int8_check()
    assert check.status == "failed" and "arm64 tolerance" in check.detail and "< 1.010" in check.detail


def test_record_refuses_a_slice(tiny_copy):
    from fer_edge.errors import BundleError
    from fer_edge.export.record import record_cpu_class

    run = dict(_arm64_run(Bundle.open(tiny_copy), 0.0), limit_per_class=10)
    with pytest.raises(BundleError, match="whole-split"):
        record_cpu_class(tiny_copy, run, cls="arm64", machine={}, command="x", date="2026-12-03")
