"""TensorRT export: engines are built where TensorRT and a CUDA GPU are; everywhere else the
request fails at once with a message naming what is missing (those tests run on every machine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_edge.errors import RuntimeUnavailableError

pytest.importorskip("torch")


def _trt_usable() -> tuple[bool, str]:
    from fer_edge.runtimes.cuda_probe import probe_tensorrt

    probe = probe_tensorrt(builder=True)
    return probe.usable, probe.reason


USABLE, REASON = _trt_usable()
needs_trt = pytest.mark.skipif(not USABLE, reason=f"TensorRT cannot build engines here: {REASON}")


def test_probe_is_honest_about_what_is_missing():
    from fer_edge.runtimes.cuda_probe import cuda_devices, cuda_status, probe_tensorrt

    probe = probe_tensorrt()
    devices, why = cuda_status()
    assert devices == cuda_devices()
    if not probe.usable:
        assert "tensorrt" in probe.reason.lower() or "cuda" in probe.reason.lower()
    if not devices:
        assert why  # says which driver call failed or that the library is absent
    for d in devices:
        index, name, (major, minor) = d  # unpacks as (index, name, compute capability)
        assert d.sm == f"sm_{major}{minor}" and isinstance(name, str)


@pytest.mark.skipif(USABLE, reason="TensorRT is usable here: the refusal path cannot be exercised")
def test_export_tensorrt_fails_cleanly_without_tensorrt(tiny_checkpoint, tmp_path, capsys):
    from fer_edge.cli import main
    from fer_edge.export import export_bundle, onnx2tensorrt

    with pytest.raises(RuntimeUnavailableError, match=r"cannot export --targets tensorrt on this machine: .*"
                                                      r"build-engine BUNDLE"):
        export_bundle(tiny_checkpoint, tmp_path / "b", name="x", targets=("onnx", "tensorrt"))
    assert list(tmp_path.iterdir()) == []  # refused before any work
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--targets", "onnx,tensorrt"]) == 4
    err = capsys.readouterr().err
    assert "fer-edge export: error: cannot export --targets tensorrt" in err and REASON.split(";")[0] in err
    with pytest.raises(RuntimeUnavailableError, match="cannot build TensorRT engines"):
        onnx2tensorrt(tmp_path / "missing.onnx", tmp_path / "m.engine")


@pytest.mark.skipif(USABLE, reason="TensorRT is usable here: the refusal path cannot be exercised")
def test_build_engine_fails_cleanly_without_tensorrt(tiny_bundle, capsys):
    from fer_edge.cli import main

    before = (tiny_bundle / "manifest.json").read_text()
    assert main(["build-engine", str(tiny_bundle), "--precision", "fp16"]) == 4
    assert "cannot build TensorRT engines on this machine" in capsys.readouterr().err
    assert (tiny_bundle / "manifest.json").read_text() == before


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx2tensorrt_builds_an_engine(tiny_bundle, tmp_path, precision):
    from fer_edge.export import onnx2tensorrt

    onnx = tiny_bundle / "backbone" / "onnx" / "model.fp32.onnx"
    cache = tmp_path / "timing.cache"
    info = onnx2tensorrt(onnx, tmp_path / f"model.{precision}.engine", precision=precision, max_batch=8,
                         timing_cache=cache)
    assert (tmp_path / f"model.{precision}.engine").stat().st_size > 0 and cache.stat().st_size > 0
    assert info["precision"] == precision and info["max_batch"] == 8 and len(info["compute_capability"]) == 2


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
def test_build_engine_into_a_bundle_and_verify(tiny_bundle):
    from fer_edge.bundle import Bundle
    from fer_edge.export import build_engine
    from fer_edge.verify import verify

    paths = build_engine(tiny_bundle, precisions=("fp32", "fp16"), max_batch=8)
    m = Bundle.open(tiny_bundle).manifest
    assert {a.path for a in m.artifacts if a.format == "tensorrt"} == set(paths)
    assert all(p in m.files and p in m.extra["tensorrt_engines"] for p in paths)
    report = verify(tiny_bundle)
    assert report.ok, report.lines()
    statuses = {c.name: c.status for c in report.checks if "tensorrt" in c.name}
    assert statuses and all(s in ("passed", "skipped") for s in statuses.values())
    assert json.loads((tiny_bundle / "manifest.json").read_text())["tensorrt_engines"]
    assert np.isfinite([c.figures.get("max_abs_diff", 0) for c in report.checks]).all()
