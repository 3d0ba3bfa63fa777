"""Export stage: each converter, export_bundle end to end, the accuracy gate, atomicity.

One tiny_fer is trained for a few steps on synthetic "faces" (a bright blob whose position is
the class), because INT8 checks on random weights mean nothing (near-constant logits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

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


def torch_outputs(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        emb = model.forward_features(torch.from_numpy(x))
        return model.classifier(emb).numpy(), emb.numpy()


def ort_run(path, x):
    from fer_edge.export.torch2onnx import ort_session

    return ort_session(path).run(["logits", "embedding"], {"input": x})


def ov_run(xml, x):
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU")
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
    assert json.loads(meta["labels"]) == list(EMOTIONS) and meta["fer_edge"] and meta["precision"] == "fp32"
    for n in (1, 5):  # dynamic batch
        x = preprocess(val.images[:n], SPEC)
        for got, want in zip(ort_run(fp32_onnx, x), torch_outputs(model, x)):
            assert np.abs(got - want).max() <= 1e-4
    with pytest.raises(ExportError, match="differs from torch"):  # the parity check is live
        torch2onnx(model, tmp_path / "m.onnx", metadata={}, atol=-1.0)


def test_onnx2int8_agrees_with_fp32(trained, fp32_onnx, tmp_path):
    from fer_edge.export import onnx2int8
    from fer_edge.export.torch2onnx import metadata_of

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    dst = onnx2int8(fp32_onnx, tmp_path / "model.int8.onnx", x)
    assert dst.stat().st_size < fp32_onnx.stat().st_size / 2
    meta = metadata_of(dst)
    assert meta["precision"] == "int8" and json.loads(meta["labels"]) == list(EMOTIONS)
    fp32_logits, _ = ort_run(fp32_onnx, x)
    int8_logits, int8_emb = ort_run(dst, x)
    assert int8_emb.shape == (len(x), 256)
    assert np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1)) >= 0.9
    with pytest.raises(ExportError, match="calibration data"):
        onnx2int8(fp32_onnx, tmp_path / "bad.onnx", x[:, 0])


@needs_openvino
@pytest.mark.openvino
def test_onnx2openvino_parity(fp32_onnx, trained, tmp_path):
    from fer_edge.export import onnx2openvino

    _, _, val = trained
    x = preprocess(val.images[:7], SPEC)
    want = ort_run(fp32_onnx, x)
    xml = onnx2openvino(fp32_onnx, tmp_path / "model.fp32.xml")
    assert xml.with_suffix(".bin").is_file()
    for got, ref in zip(ov_run(xml, x), want):
        assert np.abs(got - ref).max() <= 1e-4
    half = onnx2openvino(fp32_onnx, tmp_path / "model.fp16.xml", fp16=True)
    # FP32 weights are ~4 bytes each; FP16 compression halves the .bin.
    assert half.with_suffix(".bin").stat().st_size < 0.6 * xml.with_suffix(".bin").stat().st_size
    assert np.mean(ov_run(half, x)[0].argmax(1) == want[0].argmax(1)) >= 6 / 7


@needs_openvino
@pytest.mark.openvino
def test_openvino2int8_runs(fp32_onnx, trained, tmp_path):
    from fer_edge.export import onnx2openvino, openvino2int8

    _, _, val = trained
    x = preprocess(val.images, SPEC)
    xml = onnx2openvino(fp32_onnx, tmp_path / "model.fp32.xml")
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
        path = export_bundle(ckpt, out, name="synthetic-tiny", val=val, max_drop_pp=10, commands=commands,
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
    assert golden["input"].shape == (8, 1, 48, 48) and golden["crops"].shape == (8, 48, 48)
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


def test_accuracy_gate_refuses(trained, tmp_path):
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    out = tmp_path / "bundle"
    # A negative allowance fails even an INT8 model that loses nothing.
    with pytest.raises(AccuracyDropError, match=r"onnx/int8 val accuracy [\d.]+% .* onnx/fp32 [\d.]+%"):
        export_bundle(ckpt, out, name="gated", targets=("onnx",), val=val, max_drop_pp=-100)
    assert list(tmp_path.iterdir()) == []


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
    with pytest.raises(ExportError, match="cannot build target 'tensorrt'"):
        export_bundle(ckpt, tmp_path / "c", name="x", targets=("tensorrt",))


def test_interrupted_export_leaves_nothing(trained, tmp_path, monkeypatch):
    import fer_edge.export as export

    _, ckpt, val = trained

    def interrupted(src, dst, calib):
        Path(dst).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "onnx2int8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_bundle(ckpt, tmp_path / "bundle", name="x", targets=("onnx",), val=val)
    assert list(tmp_path.iterdir()) == []


def _write_image_folder(root: Path, faces: FaceSet) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(faces.images, faces.labels)):
        folder = root / faces.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")


def test_export_bundle_from_dataset_paths(trained, tmp_path):
    """calib and val given as an ImageFolder root with a val/ split, as the CLI passes them."""
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    _, ckpt, val = trained
    _write_image_folder(tmp_path / "data" / "val", val.subset(np.arange(0, len(val), 2)))
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
