"""Export stage: each converter, export_bundle end to end, the accuracy gate, atomicity.

One tiny_fer is trained for a few steps on synthetic "faces" (a bright blob whose position is
the class), because INT8 checks on random weights mean nothing (near-constant logits).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import write_image_folder  # noqa: E402
from fer_edge.data import FaceSet  # noqa: E402
from fer_edge.errors import AccuracyDropError, ExportError  # noqa: E402
from fer_edge.labels import EMOTIONS  # noqa: E402
from fer_edge.preprocess import InputSpec, preprocess  # noqa: E402

SPEC = InputSpec(size=(48, 48), scale=1 / 255, mean=(0.5,), std=(0.25,))
HAS_OPENVINO = True
try:
    import openvino  # noqa: F401
except ImportError:
    HAS_OPENVINO = False
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
# Test sets are far below the 300 calibration crops export_bundle asks for; that warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:export .*INT8 calibrated on only:UserWarning")


def synthetic_faces(n_per_class: int, seed: int, size: int = 48) -> FaceSet:
    """Noisy images with one bright blob; its position on a circle encodes the class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for k in range(len(EMOTIONS)):
        angle = 2 * np.pi * k / len(EMOTIONS)
        cy, cx = size / 2 + size * 0.28 * np.sin(angle), size / 2 + size * 0.28 * np.cos(angle)
        for _ in range(n_per_class):
            jy, jx = rng.normal(0, 2.0, 2)
            blob = 140 * np.exp(-((yy - cy - jy) ** 2 + (xx - cx - jx) ** 2) / (2 * rng.uniform(9, 25)))
            img = rng.uniform(40, 110) + blob + rng.normal(0, 12, (size, size))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    return FaceSet(np.stack(images), np.array(labels, dtype=np.int64), [f"synthetic:{i}" for i in range(len(labels))])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The box is shared: with two OpenMP threads, each small conv waits on a descheduled
    # thread (25 ms per conv measured under load); one thread is both modest and faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, checkpoint path, val FaceSet): tiny_fer after 15 AdamW steps (~95 % on synthetic val)."""
    from fer_edge.train.config import TrainConfig
    from fer_edge.train.loop import checkpoint_payload
    from fer_edge.train.models import create_model

    torch.manual_seed(0)
    train, val = synthetic_faces(30, 0), synthetic_faces(10, 1)
    model = create_model("tiny_fer")
    x = torch.from_numpy(preprocess(train.images, SPEC))
    y = torch.from_numpy(train.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(15):
        idx = torch.randint(0, len(y), (16,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 15 steps leave BatchNorm's running averages far behind; recompute them exactly.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, data="synthetic")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save(checkpoint_payload(model, cfg, epoch=1), path)
    return model, path, val


@pytest.fixture(scope="module")
def fp32_onnx(trained, tmp_path_factory):
    from fer_edge.export import torch2onnx

    model, _, _ = trained
    return torch2onnx(model, tmp_path_factory.mktemp("onnx") / "model.fp32.onnx",
                      metadata={"labels": json.dumps(list(EMOTIONS)), "arch": "tiny_fer"})


# The converters' outputs below are built once per module: several tests read the same default
# INT8 model, the same symmetric one or the same FP32 IR, and each conversion costs seconds on the
# 2-core CI box. A test that changes a file works on its own copy (tmp_path).


@pytest.fixture(scope="module")
def int8_onnx(trained, fp32_onnx, tmp_path_factory):
    """onnx2int8 with its defaults (the ONNX Runtime flavour), calibrated on the whole val set."""
    from fer_edge.export import onnx2int8

    _, _, val = trained
    return onnx2int8(fp32_onnx, tmp_path_factory.mktemp("int8") / "model.int8.onnx", preprocess(val.images, SPEC))


@pytest.fixture(scope="module")
def symmetric_int8_onnx(trained, fp32_onnx, tmp_path_factory):
    """onnx2int8's TensorRT flavour (symmetric: signed, zero-point-0 Q/DQ)."""
    from fer_edge.export import onnx2int8

    _, _, val = trained
    return onnx2int8(fp32_onnx, tmp_path_factory.mktemp("int8-sym") / "model.int8.qdq.onnx",
                     preprocess(val.images, SPEC), symmetric=True)


@pytest.fixture(scope="module")
def fp32_ir(fp32_onnx, tmp_path_factory):
    from fer_edge.export import onnx2openvino

    return onnx2openvino(fp32_onnx, tmp_path_factory.mktemp("ir") / "model.fp32.xml")


def torch_outputs(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        emb = model.forward_features(torch.from_numpy(x))
        return model.classifier(emb).numpy(), emb.numpy()


def ort_run(path, x):
    from fer_edge.export.torch2onnx import ort_session

    return ort_session(path).run(["logits", "embedding"], {"input": x})


def ov_run(xml, x):
    import openvino as ov

    # f32: on CPUs with avx512_bf16 OpenVINO would run the FP32 IR in bf16 (as the runtime backend does not).
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({"input": x})
    return [np.asarray(result[compiled.output(n)]) for n in ("logits", "embedding")]


# --- converters -------------------------------------------------------------------------------


def test_import_stays_light():
    code = ("import sys, fer_edge.export; "
            "print([m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_load_checkpoint(trained, tmp_path):
    from fer_edge.export import load_checkpoint

    model, path, _ = trained
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["arch"] == "tiny_fer" and meta["labels"] == list(EMOTIONS) and "model" not in meta
    x = np.random.default_rng(0).standard_normal((2, 1, 48, 48)).astype(np.float32)
    np.testing.assert_array_equal(torch_outputs(loaded, x)[0], torch_outputs(model, x)[0])

    with pytest.raises(ExportError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match="not a fer-edge checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "arch": "mobile_fer"}, tmp_path / "mismatch.pt")
    with pytest.raises(ExportError, match="do not fit architecture 'mobile_fer'"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_torch2onnx_parity_and_metadata(trained, fp32_onnx, tmp_path):
    import onnx

    from fer_edge.export import torch2onnx
    from fer_edge.export.torch2onnx import metadata_of

    model, _, val = trained
    assert not model.training  # export leaves the caller's model in the mode it found it
    assert [p.name for p in fp32_onnx.parent.iterdir()] == [fp32_onnx.name]  # one file, no external data
    proto = onnx.load(str(fp32_onnx))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "embedding"]
    meta = metadata_of(fp32_onnx)
    assert json.loads(meta["labels"]) == list(EMOTIONS) and meta["sdk_version"] and meta["precision"] == "fp32"
    assert meta["simplified"].startswith("onnxsim") or "not installed" in meta["simplified"]
    assert {"fer_edge.labels", "fer_edge.precision"} <= {p.key for p in proto.metadata_props}  # namespaced
    for n in (1, 5):  # dynamic batch
        x = preprocess(val.images[:n], SPEC)
        for got, want in zip(ort_run(fp32_onnx, x), torch_outputs(model, x)):
            assert np.abs(got - want).max() <= 1e-4
    with pytest.raises(ExportError, match="differs from torch"):  # the parity check is live
        torch2onnx(model, tmp_path / "m.onnx", metadata={}, atol=-1.0)


def test_onnx2int8_agrees_with_fp32(trained, fp32_onnx, int8_onnx, tmp_path):
    from fer_edge.export import onnx2int8
    from fer_edge.export.torch2onnx import metadata_of

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    dst = int8_onnx
    assert dst.stat().st_size < fp32_onnx.stat().st_size / 2
    meta = metadata_of(dst)
    assert meta["precision"] == "int8" and json.loads(meta["labels"]) == list(EMOTIONS)
    fp32_logits, _ = ort_run(fp32_onnx, x)
    int8_logits, int8_emb = ort_run(dst, x)
    assert int8_emb.shape == (len(x), 256)
    assert np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1)) >= 0.9
    with pytest.raises(ExportError, match="calibration data"):
        onnx2int8(fp32_onnx, tmp_path / "bad.onnx", x[:, 0])


def _conv_weight_kinds(path) -> list[str]:
    """Per Conv node in graph order: 'int8' when its weight comes through a DequantizeLinear of an
    integer initializer, 'fp32' when it is a float initializer."""
    import onnx

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    kinds = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            w = node.input[1]
            if w in dq and inits[dq[w]].data_type == onnx.TensorProto.INT8:
                kinds.append("int8")
            elif w in inits and inits[w].data_type == onnx.TensorProto.FLOAT:
                kinds.append("fp32")
            else:
                kinds.append("?")
    return kinds


def test_onnx2int8_keeps_a_thin_small_stem_fp32(trained, fp32_onnx, int8_onnx, symmetric_int8_onnx, tmp_path):
    """tiny_fer's 1-channel stem (24 x 48 x 48 values out) stays FP32 for ONNX Runtime; every other
    conv is INT8; the TensorRT flavour, and fp32_stem_rule=False, quantize the stem too."""
    from fer_edge.export import onnx2int8
    from fer_edge.export.torch2onnx import metadata_of

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    kinds = _conv_weight_kinds(int8_onnx)
    assert kinds[0] == "fp32" and kinds[1:] and set(kinds[1:]) == {"int8"}
    assert "the stem kept FP32" in metadata_of(int8_onnx)["quantization"]
    assert set(_conv_weight_kinds(onnx2int8(fp32_onnx, tmp_path / "all.onnx", x, fp32_stem_rule=False))) == {"int8"}
    assert set(_conv_weight_kinds(symmetric_int8_onnx)) == {"int8"}
    logits, _ = ort_run(int8_onnx, x)
    assert np.mean(logits.argmax(1) == ort_run(fp32_onnx, x)[0].argmax(1)) >= 0.9


def test_fp32_stem_rule_reads_channels_and_output_size():
    """Only a conv on the graph input with < 4 channels and <= 64k output values per image: the
    nano family's strided stem and tiny_fer's yes, vgg_fer's (64 x 48 x 48) no."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fer_edge.export.onnx2int8 import fp32_stem

    def graph(out_c: int, stride: int, in_c: int = 1, second: bool = False):
        w = numpy_helper.from_array(np.zeros((out_c, in_c, 3, 3), np.float32), "w")
        nodes = [helper.make_node("Conv", ["input", "w"], ["y"], name="stem", strides=[stride, stride], pads=[1] * 4)]
        inits = [w]
        if second:  # a thin conv that does not read the input is not a stem
            inits.append(numpy_helper.from_array(np.zeros((8, out_c, 3, 3), np.float32), "w2"))
            nodes.append(helper.make_node("Conv", ["y", "w2"], ["z"], name="next", pads=[1] * 4))
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", in_c, 48, 48])
        out = helper.make_tensor_value_info("z" if second else "y", TensorProto.FLOAT, ["N", 8 if second else out_c, None, None])
        return helper.make_model(helper.make_graph(nodes, "g", [inp], [out], inits))

    assert fp32_stem(graph(16, 2)) == ["stem"]  # nano_fer: 16 x 24 x 24
    assert fp32_stem(graph(24, 1)) == ["stem"]  # tiny_fer: 24 x 48 x 48 = 55,296
    assert fp32_stem(graph(64, 1)) == []  # vgg_fer: 147,456 values to quantize
    assert fp32_stem(graph(16, 2, in_c=3)) == ["stem"] and fp32_stem(graph(16, 2, in_c=4)) == []
    assert fp32_stem(graph(16, 2, second=True)) == ["stem"]
    onnx.checker.check_model(graph(16, 2, second=True))


@needs_openvino
@pytest.mark.openvino
def test_onnx2openvino_parity(fp32_onnx, fp32_ir, trained, tmp_path):
    from fer_edge.export import onnx2openvino

    _, _, val = trained
    x = preprocess(val.images[:7], SPEC)
    want = ort_run(fp32_onnx, x)
    xml = fp32_ir
    assert xml.with_suffix(".bin").is_file()
    for got, ref in zip(ov_run(xml, x), want):
        assert np.abs(got - ref).max() <= 1e-4
    half = onnx2openvino(fp32_onnx, tmp_path / "model.fp16.xml", fp16=True)
    # FP32 weights are ~4 bytes each; FP16 compression halves the .bin.
    assert half.with_suffix(".bin").stat().st_size < 0.6 * xml.with_suffix(".bin").stat().st_size
    assert np.mean(ov_run(half, x)[0].argmax(1) == want[0].argmax(1)) >= 6 / 7


@needs_openvino
@pytest.mark.openvino
def test_openvino2int8_runs(fp32_ir, trained, tmp_path):
    from fer_edge.export import openvino2int8

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    xml = fp32_ir
    q = openvino2int8(xml, tmp_path / "model.int8.xml", x[::2])
    logits, emb = ov_run(q, x)
    assert emb.shape == (len(x), 256)
    assert np.mean(logits.argmax(1) == ov_run(xml, x)[0].argmax(1)) >= 0.85


# --- export_bundle ----------------------------------------------------------------------------


@needs_openvino
@pytest.mark.openvino
def test_export_bundle_end_to_end(trained, tmp_path):
    import fer_edge
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle, read_golden
    from fer_edge.manifest import Manifest

    model, ckpt, val = trained
    out = tmp_path / "bundle"
    commands = {"train": "fer-edge train --arch tiny_fer", "export": "fer-edge export ..."}
    with pytest.warns(UserWarning, match="calibrated on only 70 crops"):
        path = export_bundle(ckpt, out, name="synthetic-tiny", val=val, max_drop_pp=10, max_f1_drop_pp=10,
                             commands=commands,
                             evaluation={"test": {"accuracy": 0.5}}, license="Apache-2.0")
    assert path == out and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging left
    bundle = Bundle.open(out)
    m = bundle.manifest
    assert Manifest.from_dict(json.loads((out / "manifest.json").read_text())).to_dict() == m.to_dict()
    assert {a.key() for a in m.artifacts} == {"onnx/fp32", "onnx/int8", "openvino/fp32", "openvino/int8"}
    assert m.model == {"arch": "tiny_fer", "params": m.model["params"], "feature_dim": 256,
                       "outputs": {"logits": "logits", "embedding": "embedding"}}
    assert m.input.input_name == "input" and m.input.mean == (0.5,) and m.input.std == (0.25,)
    assert m.labels == list(EMOTIONS) and m.license == "Apache-2.0"
    assert {"fer_edge", "torch", "onnx", "onnxruntime", "openvino", "nncf", "python"} <= set(m.producer)
    assert set(m.evaluation["val"]) == {a.key() for a in m.artifacts}
    assert set(m.evaluation["int8_agreement_val"]) == {"onnx", "openvino"}
    assert m.evaluation["test"] == {"accuracy": 0.5} and m.evaluation["accuracy_gate"]["status"] == "passed"
    assert m.extra["commands"] == commands
    assert "calibrated on only 70" in m.extra["export"]["warnings"][0]
    card = (out / "MODEL_CARD.md").read_text()
    assert "tiny_fer" in card and "fer-edge train --arch tiny_fer" in card and "Limits" in card

    golden = read_golden(out, m.golden)
    assert golden["input"].shape == (32, 1, 48, 48) and golden["crops"].shape == (32, 48, 48)
    np.testing.assert_allclose(preprocess(golden["crops"], m.input), golden["input"])
    np.testing.assert_allclose(golden["logits"], torch_outputs(model, golden["input"])[0], atol=1e-5)
    assert m.golden["measured"]["onnx/fp32"]["max_abs_diff"] <= 1e-4

    crops = val.images[:20]
    want = torch_outputs(model, preprocess(crops, SPEC))[0].argmax(1)
    for backend in ("onnxruntime", "openvino"):
        for precision in ("fp32", "int8"):
            rec = fer_edge.Recognizer(out, backend=backend, precision=precision)
            assert rec.precision == precision
            got = rec.predict_proba(crops).argmax(1)
            assert np.mean(got == want) >= (1.0 if precision == "fp32" else 0.8), (backend, precision)
            assert rec.embed(crops[:2]).shape == (2, 256)


@pytest.mark.slow  # a second full export with NNCF INT8 (about 15 s of CPU on the 2-core box)
def test_accuracy_gate_leaves_out_the_failed_artifact_and_ships_the_rest(trained, tmp_path, monkeypatch):
    """A bad OpenVINO calibration (saturating crops) fails the gate: that INT8 artifact is left out,
    every other artifact ships, and the manifest and card say which and why."""
    import importlib

    import fer_edge
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    model, ckpt, val = trained
    converter = importlib.import_module("fer_edge.export.openvino2int8")  # the OpenVINO converter calls it there
    real = converter.openvino2int8
    # A constant crop: 7 copies saturate as 70 do (the IR's outputs agree to 0.02), and NNCF's
    # statistics and bias correction take time in proportion to the count.
    monkeypatch.setattr(converter, "openvino2int8",
                        lambda src, dst, calib, **kw: real(src, dst, np.full_like(calib[:7], 40.0), **kw))
    out = tmp_path / "bundle"
    with pytest.warns(UserWarning, match="LEFT OUT"):
        export_bundle(ckpt, out, name="gated", val=val, max_drop_pp=2.0, max_f1_drop_pp=2.0)
    m = Bundle.open(out).manifest
    assert {a.key() for a in m.artifacts} == {"onnx/fp32", "onnx/int8", "openvino/fp32"}
    assert not (out / "backbone/openvino/model.int8.xml").exists()
    g = m.evaluation["accuracy_gate"]
    assert g["status"] == "partial" and list(g["left_out"]) == ["openvino/int8"]
    assert "openvino/int8 val" in g["left_out"]["openvino/int8"] and "below openvino/fp32" in g["left_out"]["openvino/int8"]
    assert m.evaluation["val"]["openvino/int8"]["shipped"] is False
    assert "openvino/int8" not in m.golden["thresholds"]
    assert "Left out of the bundle: openvino/int8" in (out / "MODEL_CARD.md").read_text()
    assert fer_edge.Recognizer(out, backend="openvino").precision == "fp32"  # auto: no INT8 to pick
    assert fer_edge.Recognizer(out, backend="onnxruntime").precision == "int8"


def test_accuracy_gate_refuses_when_nothing_is_left(trained, tmp_path):
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    out = tmp_path / "bundle"
    # A negative allowance fails even an INT8 model that loses nothing; with INT8 only, nothing ships.
    with pytest.raises(AccuracyDropError, match=r"onnx/int8 val accuracy [\d.]+% .* onnx/fp32 [\d.]+%"):
        export_bundle(ckpt, out, name="gated", artifacts=("onnx/int8",), val=val, max_drop_pp=-100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # one more export with OpenVINO FP16 beside the end-to-end one (about 13 s of CPU)
def test_int8_only_bundle_is_gated_against_fp32_built_at_export(trained, tmp_path):
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle
    from fer_edge.verify import verify

    _, ckpt, val = trained
    out = tmp_path / "bundle"
    export_bundle(ckpt, out, name="small", artifacts=("onnx/int8", "openvino/fp16"), val=val,
                  max_drop_pp=10, max_f1_drop_pp=10)
    bundle = Bundle.open(out)
    m = bundle.manifest
    assert {a.key() for a in m.artifacts} == {"onnx/int8", "openvino/fp16"}
    assert not (out / "backbone/onnx/model.fp32.onnx").exists() and not (out / "backbone/openvino/model.fp32.bin").exists()
    assert set(m.evaluation["accuracy_gate"]["drops_pp"]) == {"onnx/int8", "openvino/fp16"}
    assert m.evaluation["val"]["onnx/fp32"]["shipped"] is False  # the reference, measured but not shipped
    fp16_bin = (out / "backbone/openvino/model.fp16.bin").stat().st_size
    assert fp16_bin < 0.6 * m.model["params"] * 4  # FP16-compressed weights
    assert verify(bundle).ok


def test_accuracy_gate_allow_drop(trained, tmp_path):
    import fer_edge
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    out = tmp_path / "bundle"
    with pytest.warns(UserWarning, match="ACCEPTED ACCURACY DROP"):
        export_bundle(ckpt, out, name="gated", targets=("onnx",), val=val, max_drop_pp=-100, allow_drop=True)
    m = Bundle.open(out).manifest
    assert m.evaluation["accuracy_gate"]["status"] == "accepted_drop"
    assert any("ACCEPTED ACCURACY DROP" in w for w in m.extra["export"]["warnings"])
    assert "ACCEPTED ACCURACY DROP" in (out / "MODEL_CARD.md").read_text()
    assert fer_edge.Recognizer(out, backend="onnxruntime", precision="int8").precision == "int8"


def test_no_val_skips_gate_and_int8_needs_calibration(trained, tmp_path):
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    with pytest.raises(ExportError, match="calibration"):
        export_bundle(ckpt, tmp_path / "a", name="x", targets=("onnx",))
    with pytest.warns(UserWarning, match="gate SKIPPED, INT8 accuracy unverified"):
        export_bundle(ckpt, tmp_path / "a", name="x", targets=("onnx",), calib=val)
    assert Bundle.open(tmp_path / "a").manifest.evaluation["accuracy_gate"]["status"] == "skipped"
    with pytest.warns(UserWarning, match="no validation data given: no accuracy figures$"):
        export_bundle(ckpt, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",))
    m = Bundle.open(tmp_path / "b").manifest
    assert m.evaluation["accuracy_gate"]["status"] == "skipped"
    assert [a.key() for a in m.artifacts] == ["onnx/fp32"]
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(ckpt, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",))
    (tmp_path / "b" / "stale.txt").write_text("from the previous export")
    with pytest.warns(UserWarning, match="no validation data"):
        export_bundle(ckpt, tmp_path / "b", name="y", targets=("onnx",), precisions=("fp32",), overwrite=True)
    assert Bundle.open(tmp_path / "b").name == "y" and not (tmp_path / "b" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    with pytest.raises(ExportError, match="cannot build target 'coreml'"):
        export_bundle(ckpt, tmp_path / "c", name="x", targets=("coreml",))


def test_interrupted_export_leaves_nothing(trained, tmp_path, monkeypatch):
    import importlib

    import fer_edge.export.pipeline as pipeline

    _, ckpt, val = trained

    def interrupted(src, dst, calib):
        Path(dst).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("fer_edge.export.onnx2int8"), "onnx2int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_bundle(ckpt, tmp_path / "bundle", name="x", targets=("onnx",), val=val)
    assert list(tmp_path.iterdir()) == []


def test_export_bundle_from_dataset_paths(trained, tmp_path):
    """calib and val given as an ImageFolder root with a val/ split, as the CLI passes them."""
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    write_image_folder(tmp_path / "data" / "val", val.subset(np.arange(0, len(val), 2)))
    out = export_bundle(ckpt, tmp_path / "bundle", name="x", targets=("onnx",), calib=tmp_path / "data",
                        val=tmp_path / "data", allow_drop=True)
    m = Bundle.open(out).manifest
    assert m.extra["export"]["calibration"]["n"] == 35
    assert m.evaluation["val"]["onnx/fp32"]["n"] == 35


@pytest.mark.dataset
def test_export_with_real_fer2013_crops(trained, tmp_path, fer2013):
    """Real crops through calibration and the gate (a small copy of the val split, to stay fast)."""
    import shutil

    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    _, ckpt, _ = trained
    for cls in EMOTIONS:
        (tmp_path / "data" / "val" / cls).mkdir(parents=True)
        for f in sorted((fer2013 / "val" / cls).iterdir())[:6]:
            shutil.copy(f, tmp_path / "data" / "val" / cls / f.name)
    out = export_bundle(ckpt, tmp_path / "bundle", name="x", targets=("onnx",), val=tmp_path / "data",
                        allow_drop=True)  # a model trained on blobs: only the plumbing is under test
    m = Bundle.open(out).manifest
    assert m.evaluation["val"]["onnx/int8"]["n"] == 42
    assert m.golden["measured"]["onnx/fp32"]["max_abs_diff"] <= 1e-4


# --- converters added for TensorRT and FP16 -----------------------------------------------------


def test_onnx2fp16_keeps_fp32_io(fp32_onnx, trained, tmp_path):
    import onnx

    from fer_edge.export import onnx2fp16
    from fer_edge.export.torch2onnx import metadata_of

    _, _, val = trained
    dst = onnx2fp16(fp32_onnx, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(dst))
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT]
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in proto.graph.initializer)  # weights are half
    assert metadata_of(dst)["precision"] == "fp16" and json.loads(metadata_of(dst)["labels"]) == list(EMOTIONS)
    x = preprocess(val.images[:16], SPEC)
    (ref_logits, ref_emb), (logits, emb) = ort_run(fp32_onnx, x), ort_run(dst, x)
    assert np.abs(emb - ref_emb).max() <= 1e-2 * max(1.0, np.abs(ref_emb).max())
    assert np.mean(logits.argmax(1) == ref_logits.argmax(1)) >= 15 / 16


def test_onnx2int8_symmetric_flavour_for_tensorrt(fp32_onnx, symmetric_int8_onnx, trained):
    """TensorRT takes only signed, zero-point-0 Q/DQ: every zero point is an int8 zero."""
    import onnx
    from onnx import numpy_helper

    from fer_edge.export.torch2onnx import metadata_of

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    dst = symmetric_int8_onnx
    proto = onnx.load(str(dst))
    inits = {i.name: i for i in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
    assert all(not numpy_helper.to_array(z).any() for z in zero_points)
    assert "symmetric" in metadata_of(dst)["quantization"]
    logits, _ = ort_run(dst, x)
    assert np.mean(logits.argmax(1) == ort_run(fp32_onnx, x)[0].argmax(1)) >= 0.8


def test_formats_key_engines_by_device():
    from fer_edge.errors import InputError
    from fer_edge.formats import FORMATS, device_key, device_key_of

    key = device_key((8, 7), "10.3.0.30")
    assert key == "sm_87-trt10.3.0.30"
    path = FORMATS["tensorrt"].path("fp16", key)
    assert path == "backbone/tensorrt/sm_87-trt10.3.0.30/model.fp16.engine" and device_key_of(path) == key
    assert FORMATS["tensorrt"].companion_paths("fp16", key) == ["backbone/tensorrt/sm_87-trt10.3.0.30/timing.cache"]
    assert FORMATS["openvino"].companion_paths("int8") == ["backbone/openvino/model.int8.bin"]
    with pytest.raises(InputError, match="keyed by device"):
        FORMATS["tensorrt"].path("fp16")
    with pytest.raises(InputError, match="not device-specific"):
        FORMATS["onnx"].path("fp32", key)
    with pytest.raises(InputError, match="sm_<major><minor>-trt<version>"):
        FORMATS["tensorrt"].path("fp16", "../../etc")


# --- the gate on macro-F1 -----------------------------------------------------------------------


def _report(y_true, y_pred):
    from fer_edge.metrics import classification_report

    from fer_edge.export.gate import ValResult

    r = classification_report(np.asarray(y_true), np.asarray(y_pred), list(EMOTIONS))
    one_hot = np.eye(len(EMOTIONS), dtype=np.float32)[np.asarray(y_pred)]
    return ValResult(r["accuracy"], r["macro_f1"], r["n"], one_hot, np.asarray(y_true))


def test_gate_refuses_int8_that_kills_a_class():
    """Same accuracy, but the rare 'disgust' class is gone (as in FER2013, where it has 1.5 % of the
    faces): accuracy alone would ship it, the macro-F1 bound refuses it."""
    from fer_edge.export.gate import GateConfig, gate

    y = np.concatenate([np.full(40 if k != 1 else 4, k) for k in range(7)])
    happy, disgust = np.flatnonzero(y == 3)[:4], np.flatnonzero(y == 1)
    fp32, int8 = y.copy(), y.copy()
    fp32[happy] = 4  # FP32 calls four happy faces neutral
    int8[disgust] = 0  # INT8 gets those right, but calls every disgust face angry
    reports = {"onnx/fp32": _report(y, fp32), "onnx/int8": _report(y, int8)}
    assert reports["onnx/int8"].accuracy == reports["onnx/fp32"].accuracy
    assert gate(reports, GateConfig(max_drop_pp=0.5, max_f1_drop_pp=100.0), [])["accuracy_gate"]["status"] == "passed"
    left = gate(reports, GateConfig(max_drop_pp=0.5, max_f1_drop_pp=1.0), [])["accuracy_gate"]
    assert left["status"] == "partial" and left["failed_artifacts"] == []
    assert re.search(r"onnx/int8 val macro-F1 .* pp below onnx/fp32 .*\(allowed: 1.0 pp\)", left["left_out"]["onnx/int8"])
    notes: list[str] = []
    figures = gate(reports, GateConfig(max_drop_pp=0.5, max_f1_drop_pp=1.0, allow_drop=True), notes)
    g = figures["accuracy_gate"]
    assert g["status"] == "accepted_drop" and g["failed_artifacts"] == ["onnx/int8"]
    assert g["drops_pp"]["onnx/int8"] == 0 and g["f1_drops_pp"]["onnx/int8"] > 10
    assert figures["int8_agreement_val"]["onnx"] == pytest.approx(1 - 8 / len(y))
    assert any("ACCEPTED ACCURACY DROP" in n and "macro-F1" in n for n in notes)


# --- heads -------------------------------------------------------------------------------------


def _fit_xgboost_head(model, faces: FaceSet, folder: Path, *, labels=EMOTIONS, num_features=None) -> Path:
    """A tiny multi:softprob head (20 rounds, depth 3) on the model's embeddings, as fit-head writes it."""
    xgboost = pytest.importorskip("xgboost")
    x = preprocess(faces.images, SPEC)
    with torch.no_grad():
        emb = model.forward_features(torch.from_numpy(x)).numpy()
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 7, "max_depth": 3, "eta": 0.3,
                             "nthread": 1}, xgboost.DMatrix(emb, label=faces.labels), num_boost_round=20)
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / "model.ubj"))
    (folder / "head.json").write_text(json.dumps({
        "kind": "xgboost", "num_features": num_features or emb.shape[1], "num_classes": 7, "labels": list(labels),
        "model": "model.ubj", "checkpoint_sha256": "", "params": {"max_depth": 3}, "val": {}}))
    return folder


def test_head_that_does_not_fit_the_backbone_is_refused(trained, tmp_path):
    from fer_edge.export import export_bundle

    model, ckpt, val = trained
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(Path(ckpt).read_bytes())
    _fit_xgboost_head(model, val, run / "heads" / "xgboost", num_features=512)
    with pytest.raises(ExportError, match=r"takes 512 features but the backbone's embedding \(tiny_fer\) has 256"):
        export_bundle(run, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",), head="xgboost")
    _fit_xgboost_head(model, val, tmp_path / "other", labels=list(reversed(EMOTIONS)))
    with pytest.raises(ExportError, match="head labels .* differ from the backbone's"):
        export_bundle(run, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",), head="xgboost",
                      head_path=tmp_path / "other")
    with pytest.raises(ExportError, match="no fitted xgboost head .* fit-head"):
        export_bundle(run, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",), head="xgboost",
                      head_path=tmp_path / "nowhere")
    with pytest.raises(ExportError, match="cannot be exported"):
        export_bundle(run, tmp_path / "b", name="x", targets=("onnx",), precisions=("fp32",), head="svm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "run"]  # refused before any work


@pytest.mark.filterwarnings("ignore:export .*no validation data")
def test_export_with_compiled_xgboost_head(trained, tmp_path):
    """Run folder -> bundle with the compiled tree head; verify runs the library against XGBoost."""
    pytest.importorskip("tl2cgen")
    import shutil as _shutil

    if _shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the head library cannot be built")
    from fer_edge.bundle import Bundle
    from fer_edge.cli import main
    from fer_edge.export import export_bundle
    from fer_edge.verify import verify

    model, ckpt, val = trained
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(Path(ckpt).read_bytes())
    _fit_xgboost_head(model, val, run / "heads" / "xgboost")
    out = export_bundle(run, tmp_path / "bundle", name="with-head", targets=("onnx",), precisions=("fp32",),
                        head="xgboost", val=val)
    m = Bundle.open(out).manifest
    h = m.heads["xgboost"]
    assert h["num_features"] == 256 and h["model"] == "head/xgboost/model.ubj" and h["sources"] == "head/xgboost/src"
    assert all(p.startswith("head/xgboost/lib/") and p in m.files for p in h["libraries"].values())
    assert h["parity"]["max_abs_diff"] <= 1e-5 and set(h["val"]) >= {"accuracy", "macro_f1"}
    assert (out / "head" / "xgboost" / "src" / "CMakeLists.txt").is_file()
    golden = np.load(out / m.golden["heads"]["xgboost"])
    assert golden.shape == (32, 7) and np.allclose(golden.sum(1), 1, atol=1e-5)
    chosen = m.evaluation["default_head"]
    assert chosen["chosen"] == ("xgboost" if h["val"]["accuracy"] > chosen["in_graph"]["accuracy"] else "in_graph")
    assert "Default head:" in (out / "MODEL_CARD.md").read_text()
    report = verify(out)
    assert report.ok, report.lines()
    assert next(c for c in report.checks if c.name.startswith("head xgboost")).status == "passed"
    # The CLI runs the same function, from the run folder, with the head forced to be the default.
    assert main(["export", str(run), "--out", str(tmp_path / "cli"), "--targets", "onnx", "--precision", "fp32",
                 "--head", "xgboost", "--default-head"]) == 0
    assert Bundle.open(tmp_path / "cli").manifest.head == {"kind": "xgboost", "name": "xgboost"}
    assert main(["verify", str(tmp_path / "cli")]) == 0


@pytest.mark.slow  # one more export with OpenVINO FP32 and FP16 and a head (about 12 s of CPU)
@needs_openvino
def test_export_linear_head_from_the_classifier(trained, tmp_path):
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle
    from fer_edge.verify import verify

    model, ckpt, val = trained
    with pytest.warns(UserWarning, match="default head linear forced although it does not beat in_graph"):
        out = export_bundle(ckpt, tmp_path / "b", name="lin", targets=("onnx", "openvino"),
                            precisions=("fp32", "fp16"), head="linear", val=val, default_head=True)
    m = Bundle.open(out).manifest
    # FP16 is an OpenVINO artifact (compressed weights); ONNX is not built at FP16 (see _check_choice).
    assert {a.key() for a in m.artifacts} == {"onnx/fp32", "openvino/fp32", "openvino/fp16"}
    assert "openvino/fp16" in m.evaluation["accuracy_gate"]["drops_pp"]
    assert m.heads["linear"]["weights"] == "head/linear.npz" and m.head == {"kind": "linear", "name": "linear"}
    with np.load(out / "head" / "linear.npz") as z:
        linear = model.classifier[-1]
        np.testing.assert_array_equal(z["weight"], linear.weight.detach().numpy())
    # The same function as in_graph: same val accuracy, so it is the default only because it was forced.
    assert m.heads["linear"]["val"]["accuracy"] == m.evaluation["val"]["onnx/fp32"]["accuracy"]
    assert "forced" in m.evaluation["default_head"]["reason"]
    assert verify(out).ok
