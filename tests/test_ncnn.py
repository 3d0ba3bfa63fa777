"""The ncnn format and backend on a tiny synthetic model: conversion parity, batches, threads,
the identity sidecar, tampering, and the clear error when the wheel is absent."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_edge.errors import BundleError, RuntimeUnavailableError

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ncnn_bundle(tiny_checkpoint, faces, tmp_path_factory) -> Path:
    """ONNX FP32 + ncnn FP32 + ncnn FP16 of the tiny checkpoint, gated on the synthetic faces."""
    from fer_edge.export import export_bundle

    out = tmp_path_factory.mktemp("ncnn") / "tiny-ncnn"
    return export_bundle(tiny_checkpoint, out, name="tiny-ncnn", artifacts=("onnx/fp32", "ncnn/fp32", "ncnn/fp16"),
                         val=faces, allow_drop=True)


def _backend(bundle, precision, threads=1):
    from fer_edge.runtimes import select_backend

    return select_backend(bundle, "ncnn", precision=precision, threads=threads).backend


@pytest.mark.ncnn
def test_export_writes_param_bin_and_sidecar_and_gates_fp16_against_the_onnx(ncnn_bundle):
    from fer_edge.bundle import Bundle

    m = Bundle.open(ncnn_bundle).manifest
    assert {a.key() for a in m.artifacts} == {"onnx/fp32", "ncnn/fp32", "ncnn/fp16"}
    for prec in ("fp32", "fp16"):
        for suffix in (".param", ".bin", ".json"):
            assert f"backbone/ncnn/model.{prec}{suffix}" in m.files
    side = json.loads((ncnn_bundle / "backbone/ncnn/model.fp16.json").read_text())
    assert side["precision"] == "fp16" and side["options"]["fp16_storage"] is True
    assert set(side["outputs"]) == {"logits", "embedding"} and side["outputs"]["logits"]["shape"] == [-1, 7]
    from fer_edge.verify import identity_digest

    assert side["fer_edge"]["manifest_sha256"] == identity_digest(m)
    assert "ncnn/fp16" in m.evaluation["accuracy_gate"]["drops_pp"]  # gated against onnx/fp32
    assert "FP16 storage" in m.extra["export"]["ncnn"]["storage"]["ncnn/fp16"]
    assert m.golden["measured"]["ncnn/fp32"]["max_abs_diff"] < 1e-3


@pytest.mark.ncnn
def test_ncnn_matches_onnxruntime_fp32_and_a_batch_equals_single_calls(ncnn_bundle):
    from fer_edge.bundle import Bundle
    from fer_edge.export import read_golden
    from fer_edge.parity import TOLERANCE
    from fer_edge.runtimes import select_backend

    bundle = Bundle.open(ncnn_bundle)
    x = read_golden(bundle.root, bundle.manifest.golden)["input"][:6]
    ort = select_backend(bundle, "onnxruntime", precision="fp32", threads=1).backend.run(x)
    for prec in ("fp32", "fp16"):
        be = _backend(bundle, prec)
        batch = be.run(x)
        singles = [be.run(x[i:i + 1]) for i in range(len(x))]
        tol = TOLERANCE[prec]
        for name in ("logits", "embedding"):
            assert batch[name].shape == ort[name].shape
            np.testing.assert_array_equal(batch[name], np.concatenate([s[name] for s in singles]))
            np.testing.assert_allclose(batch[name], ort[name], atol=tol["atol"] * 10 if prec == "fp16" else 1e-4,
                                       rtol=tol.get("rtol", 0) if prec == "fp16" else 1e-4)
        assert (batch["logits"].argmax(1) == ort["logits"].argmax(1)).mean() >= 5 / 6


@pytest.mark.ncnn
def test_threads_are_honoured(ncnn_bundle):
    from fer_edge.bundle import Bundle

    bundle = Bundle.open(ncnn_bundle)
    for n in (1, 2):
        be = _backend(bundle, "fp32", threads=n)
        assert be.net.opt.num_threads == n and be.describe()["threads"] == n


@pytest.mark.ncnn
def test_recognizer_verify_and_auto_include_ncnn(ncnn_bundle, faces, tmp_path, monkeypatch):
    import fer_edge
    from fer_edge.bundle import Bundle
    from fer_edge.verify import verify

    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    bundle = Bundle.open(ncnn_bundle)
    report = verify(bundle)
    assert report.ok, report.lines()
    checks = {c.name: c for c in report.checks}
    assert checks["artifact ncnn/fp16"].status == "passed" and "stamped in ncnn metadata" in checks["artifact ncnn/fp16"].detail
    rec = fer_edge.Recognizer(ncnn_bundle, backend="ncnn", threads=1)
    ref = fer_edge.Recognizer(ncnn_bundle, backend="onnxruntime", precision="fp32", threads=1)
    got, want = rec.predict_proba(faces.images[:8]), ref.predict_proba(faces.images[:8])
    np.testing.assert_allclose(got, want, atol=2e-2)
    timed = fer_edge.Recognizer(ncnn_bundle, threads=1).describe()["timings_ms"]
    assert any(k.startswith("ncnn/") for k in timed) and "onnxruntime/fp32" in timed  # ncnn pairs join auto


@pytest.mark.ncnn
@pytest.mark.parametrize("victim", ["model.fp16.bin", "model.fp16.param", "model.fp16.json"])
def test_a_tampered_ncnn_file_is_refused(ncnn_bundle, tmp_path, victim):
    from fer_edge.bundle import Bundle

    copy = Path(shutil.copytree(ncnn_bundle, tmp_path / "b"))
    f = copy / "backbone/ncnn" / victim
    data = bytearray(f.read_bytes())
    data[-2] ^= 0x01  # the bin's last weight, the param's last digit, the sidecar's closing brace area
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="altered|sha256"):
        Bundle.open(copy)
    # Past the manifest's hashes (verify=False), the backend still refuses a param/bin its sidecar does not name.
    if victim != "model.fp16.json":
        with pytest.raises(BundleError, match="sidecar"):
            _backend(Bundle.open(copy, verify=False), "fp16")


@pytest.mark.ncnn
def test_a_sidecar_naming_another_bundle_is_refused(ncnn_bundle, tmp_path):
    from fer_edge.bundle import Bundle, file_entry

    copy = Path(shutil.copytree(ncnn_bundle, tmp_path / "b"))
    side_path = copy / "backbone/ncnn/model.fp16.json"
    side = json.loads(side_path.read_text())
    side["fer_edge"]["manifest_sha256"] = "0" * 64
    side_path.write_text(json.dumps(side))
    manifest = json.loads((copy / "manifest.json").read_text())  # re-hashed, as a careless edit would
    manifest["files"]["backbone/ncnn/model.fp16.json"] = file_entry(side_path)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest identity"):
        Bundle.open(copy)


def test_explicit_ncnn_without_the_wheel_raises_never_falls_back(tiny_bundle, monkeypatch):
    """No ncnn installed (simulated): backend='ncnn' names the extra to install."""
    import fer_edge

    real_import = builtins.__import__

    def no_ncnn(name, *args, **kwargs):
        if name == "ncnn" or name.startswith("ncnn."):
            raise ImportError("No module named 'ncnn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ncnn)
    monkeypatch.setattr("importlib.import_module", lambda name, *a: no_ncnn(name))
    from fer_edge.runtimes.ncnn import NcnnBackend

    assert not NcnnBackend.probe().usable
    with pytest.raises(RuntimeUnavailableError, match=r"fer-edge\[ncnn\]"):
        fer_edge.Recognizer(tiny_bundle, backend="ncnn")


@pytest.mark.ncnn
def test_add_ncnn_to_an_int8_only_bundle_gates_checks_and_records_it(tiny_checkpoint, faces, tmp_path):
    """The packaged base's path: no checkpoint, only a QDQ INT8 ONNX -> dequantized -> ncnn FP16."""
    from fer_edge.bundle import Bundle
    from fer_edge.errors import ExportError
    from fer_edge.export import export_bundle
    from fer_edge.export.add_ncnn import add_ncnn
    from fer_edge.verify import verify

    out = export_bundle(tiny_checkpoint, tmp_path / "int8-only", name="int8-only", artifacts=("onnx/int8",),
                        val=faces, max_drop_pp=100, max_f1_drop_pp=100)
    got = add_ncnn(out, val=faces, command="fer-edge add-ncnn int8-only --val faces")
    m = Bundle.open(out).manifest
    assert {a.key() for a in m.artifacts} == {"onnx/int8", "ncnn/fp16"}
    assert m.extra["export"]["ncnn"]["source"].startswith("onnx/int8 dequantized")
    assert m.extra["commands"]["add_ncnn"] == "fer-edge add-ncnn int8-only --val faces"
    assert m.evaluation["accuracy_gate"]["drops_pp"]["ncnn/fp16"] == got["drop_pp"]
    assert m.golden["thresholds"]["ncnn/fp16"]["atol"] >= got["golden"]["max_abs_diff"]
    assert verify(Bundle.open(out)).ok
    with pytest.raises(ExportError, match="already ships"):
        add_ncnn(out, val=faces)
