"""fer_edge.verify: golden inputs through every artifact and head, hashes, identity stamps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _status(report) -> dict[str, str]:
    return {c.name.split(" (")[0]: c.status for c in report.checks}


def test_verify_passes_on_a_fresh_export(tiny_bundle):
    from fer_edge.cli import main
    from fer_edge.verify import verify

    report = verify(tiny_bundle)
    assert report.ok, report.lines()
    status = _status(report)
    assert status["files"] == "passed"
    artifacts = {k: v for k, v in status.items() if k.startswith("artifact")}
    assert set(artifacts) == {"artifact onnx/fp32", "artifact onnx/int8", "artifact openvino/fp32",
                              "artifact openvino/int8"}
    assert all(v == "passed" for v in artifacts.values())
    fp32 = next(c for c in report.checks if c.name == "artifact onnx/fp32")
    assert fp32.figures["max_abs_diff"] <= 1e-4
    for c in report.checks:  # the export path stamps every artifact: digest, name, version, labels, input spec
        if c.name.startswith("artifact"):
            assert "identity stamped" in c.detail and "(manifest digest, name, version, labels, input)" in c.detail, c
    int8 = next(c for c in report.checks if c.name == "artifact onnx/int8")
    assert int8.figures["tolerance"]["min_top1_agreement"] > 0.5  # a threshold recorded for this artifact
    assert main(["verify", str(tiny_bundle)]) == 0
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_tampered_artifact_fails_verify(tiny_bundle, capsys):
    from fer_edge.cli import main
    from fer_edge.verify import verify

    onnx = tiny_bundle / "backbone" / "onnx" / "model.int8.onnx"
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    onnx.write_bytes(bytes(data))
    (tiny_bundle / "backbone" / "stray.bin").write_bytes(b"not listed")
    report = verify(tiny_bundle)
    assert not report.ok
    files = next(c for c in report.checks if c.name == "files")
    assert files.status == "failed" and "model.int8.onnx was altered" in files.detail
    assert "stray.bin is not listed" in files.detail
    assert main(["verify", str(tiny_bundle)]) == 5
    assert "FAILED" in capsys.readouterr().out


def test_artifact_from_another_bundle_is_caught(tiny_bundle, tmp_path):
    """Same bytes everywhere except the identity: a renamed bundle's ONNX carries the old digest."""
    from fer_edge.bundle import Bundle, write_manifest
    from fer_edge.verify import identity_digest, verify

    bundle = Bundle.open(tiny_bundle)
    m = bundle.manifest
    old = identity_digest(m)
    m.name = "renamed"  # the files still say they belong to 'tiny-test'
    write_manifest(tiny_bundle, m)
    assert identity_digest(m) != old
    status = _status(verify(tiny_bundle))
    assert status["artifact onnx/fp32"] == "failed" and status["artifact openvino/int8"] == "failed"
    assert status["files"] == "passed"  # hashes alone would not have noticed


def test_drifted_golden_outputs_fail(tiny_bundle):
    from fer_edge.bundle import Bundle, write_manifest
    from fer_edge.verify import verify

    bundle = Bundle.open(tiny_bundle)
    logits = tiny_bundle / "golden" / "logits.npy"
    np.save(logits, np.load(logits) + 1e-2)  # what torch "said" no longer matches the artifacts
    write_manifest(tiny_bundle, bundle.manifest)  # re-hashed: only the numbers can catch it now
    report = verify(tiny_bundle)
    status = _status(report)
    assert status["files"] == "passed"
    assert status["artifact onnx/fp32"] == "failed" and status["artifact openvino/fp32"] == "failed"
    assert "max |diff|" in next(c for c in report.checks if c.name == "artifact onnx/fp32").detail


def test_unusable_backend_is_skipped_not_passed(tiny_bundle, monkeypatch):
    from fer_edge.runtimes import BACKENDS
    from fer_edge.runtimes.base import Probe
    from fer_edge.verify import verify

    monkeypatch.setattr(BACKENDS["openvino"], "probe", classmethod(lambda cls: Probe(False, "openvino removed")))
    report = verify(tiny_bundle)
    status = _status(report)
    assert status["artifact openvino/fp32"] == "skipped" and status["artifact onnx/fp32"] == "passed"
    assert "openvino removed" in next(c for c in report.checks if c.name == "artifact openvino/fp32").detail
    assert report.ok  # skipped is not a failure, but it is never reported as passed


def test_verify_zip_and_missing_file(tiny_bundle, tmp_path):
    from fer_edge.bundle import zip_bundle
    from fer_edge.verify import verify

    z = zip_bundle(tiny_bundle, tmp_path / "b.zip")
    assert verify(z).ok
    shutil.rmtree(tiny_bundle / "golden")
    report = verify(tiny_bundle)
    assert not report.ok
    assert "golden/input.npy is missing" in next(c for c in report.checks if c.name == "files").detail
