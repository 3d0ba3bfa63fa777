"""Recognizer end to end on a tiny exported bundle: inputs, backends, selection, failures."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import fer_edge
from fer_edge import BundleError, InputError, RuntimeUnavailableError
from fer_edge.runtimes import BACKENDS, Probe
from fer_edge.runtimes.onnxruntime import OnnxRuntimeBackend

from conftest import pin_timings, pin_vendor  # noqa: E402

BOTH = [("onnxruntime", "fp32"), ("onnxruntime", "int8"),
        pytest.param("openvino", "fp32", marks=pytest.mark.openvino),
        pytest.param("openvino", "int8", marks=pytest.mark.openvino)]


@pytest.mark.parametrize("backend,precision", BOTH)
def test_each_backend_and_precision_learns_the_synthetic_task(tiny_bundle, faces, backend, precision):
    rec = fer_edge.Recognizer(tiny_bundle, backend, precision=precision)
    assert (rec.backend, rec.precision) == (backend, precision)
    preds = rec.predict_batch(list(faces.images))
    accuracy = np.mean([p.label == faces.classes[y] for p, y in zip(preds, faces.labels)])
    assert accuracy > 0.6  # chance is 1/7


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_fp32_backends_match_the_golden_torch_outputs(tiny_bundle, backend):
    golden = tiny_bundle / "golden"
    x = np.load(golden / "input.npy")
    rec = fer_edge.Recognizer(tiny_bundle, backend, precision="fp32")
    logits = rec._run(x)["logits"]
    np.testing.assert_allclose(logits, np.load(golden / "logits.npy"), atol=1e-4)


def test_prediction_fields_and_probabilities(tiny_bundle, faces):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    p = rec.predict(faces.images[0])
    assert p.labels == rec.labels == tuple(fer_edge.EMOTIONS)
    assert p.label == p.labels[int(np.argmax(p.probs))]
    assert p.score == pytest.approx(float(p.probs.max()))
    assert p.probs.sum() == pytest.approx(1.0, abs=1e-5)
    d = p.as_dict()
    assert set(d["probs"]) == set(fer_edge.EMOTIONS) and json.dumps(d)


def test_accepts_gray_bgr_bgra_and_any_size(tiny_bundle, faces):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    gray = faces.images[3]
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    bgra = np.concatenate([bgr, np.full_like(gray[:, :, None], 255)], axis=2)
    big = np.kron(gray, np.ones((4, 3), dtype=np.uint8))  # 192 x 144: resized per the manifest
    probs = [rec.predict(img).probs for img in (gray, gray[:, :, None], bgr, bgra)]
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], atol=1e-6)
    assert rec.predict(big).label == rec.predict(gray).label


def test_predict_batch_equals_single_predictions(tiny_bundle, faces):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    batch = rec.predict_batch(faces.images[:9])  # an N x H x W array counts as a batch
    for img, p in zip(faces.images[:9], batch):
        np.testing.assert_allclose(rec.predict(img).probs, p.probs, atol=1e-5)


@pytest.mark.parametrize("bad,fragment", [
    (None, "None"),
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((48, 48), np.float32), "dtype float32"),
    (np.full((48, 48), np.nan, np.float32), "NaN"),
    (np.zeros((2, 48, 48, 3), np.uint8), "shape"),
    (np.zeros((48, 48, 2), np.uint8), "shape"),
    ("face.jpg", "str"),
])
def test_bad_input_is_a_clear_value_error(tiny_bundle, bad, fragment):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    with pytest.raises(InputError, match=fragment) as e:
        rec.predict(bad)
    assert isinstance(e.value, ValueError)


def test_empty_batch_is_refused(tiny_bundle):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    with pytest.raises(InputError, match="empty"):
        rec.predict_batch([])


def test_auto_reports_what_it_chose_and_why(tiny_bundle, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tiny_bundle.parent / "cache"))
    rec = fer_edge.Recognizer(tiny_bundle)
    d = rec.describe()
    assert d["backend"] in BACKENDS and d["precision"] in ("int8", "fp32")
    assert "auto" in d["reason"] and d["artifact"].endswith(".onnx" if d["backend"] == "onnxruntime" else ".xml")
    # the fastest, or a more accurate pair within the timing noise of it (never more than 10 % slower)
    assert d["decision"]["method"] == "measured" and d["timings_ms"][f"{d['backend']}/{d['precision']}"] <= 1.1 * min(
        d["timings_ms"].values())


def test_threads_are_passed_to_the_backend(tiny_bundle):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", threads=1)
    assert rec.describe()["threads"] == 1


def test_explicit_backend_that_is_not_installed_names_the_extra(tiny_bundle, monkeypatch):
    monkeypatch.setattr(OnnxRuntimeBackend, "probe", classmethod(lambda cls: Probe(False, "cannot import onnxruntime")))
    with pytest.raises(RuntimeUnavailableError, match=r"fer-edge\[onnxruntime\]"):
        fer_edge.Recognizer(tiny_bundle, "onnxruntime")


def test_unknown_backend_and_missing_precision(tiny_bundle):
    with pytest.raises(InputError, match="unknown backend"):
        fer_edge.Recognizer(tiny_bundle, "tflite")
    with pytest.raises(BundleError, match="fp16"):
        fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp16")


@pytest.mark.openvino
@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
@pytest.mark.parametrize("mode", ["measure", "order"])
def test_auto_skips_a_backend_that_imports_but_cannot_run(tiny_bundle, monkeypatch, vendor, mode):
    # Whichever CPU backend auto would take first (by timing or by the fixed order) is the broken
    # one, so the outcome is the same on an Intel and an AMD CPU.
    from fer_edge.runtimes import auto_order
    from fer_edge.runtimes.openvino import OpenVinoBackend

    pin_vendor(monkeypatch, vendor)
    monkeypatch.setenv("FER_EDGE_AUTO", mode)
    monkeypatch.setenv("FER_EDGE_CACHE", str(tiny_bundle.parent / "cache"))
    first = [n for n in auto_order()[0] if n in ("onnxruntime", "openvino")][0]
    other = "openvino" if first == "onnxruntime" else "onnxruntime"
    pin_timings(monkeypatch, {f"{first}/int8": 0.1, f"{other}/int8": 0.2})

    def broken(self, *a, **k):
        raise BundleError("simulated: provider failed to initialise")

    cls = OnnxRuntimeBackend if first == "onnxruntime" else OpenVinoBackend
    monkeypatch.setattr(cls, "__init__", broken)
    rec = fer_edge.Recognizer(tiny_bundle)  # auto moves on ...
    assert rec.backend == other and rec.precision == "int8"
    skipped = rec.describe()["skipped"]
    assert "simulated" in (skipped[first] if mode == "order" else skipped[f"{first}/int8"])
    with pytest.raises(BundleError, match="simulated"):  # ... an explicit request never does
        fer_edge.Recognizer(tiny_bundle, first)


def test_tampered_artifact_is_refused(tiny_bundle):
    path = tiny_bundle / "backbone" / "onnx" / "model.fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.fp32.onnx"):
        fer_edge.Recognizer(tiny_bundle)


def test_zipped_bundle_gives_the_same_answers(tiny_bundle, faces, tmp_path, monkeypatch):
    from fer_edge.bundle import zip_bundle

    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    z = zip_bundle(tiny_bundle, tmp_path / "tiny.ferb.zip")
    a = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32").predict_proba(faces.images[:5])
    b = fer_edge.Recognizer(z, "onnxruntime", precision="fp32").predict_proba(faces.images[:5])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_one_recognizer_serves_many_threads(tiny_bundle, faces, backend):
    rec = fer_edge.Recognizer(tiny_bundle, backend, precision="fp32")
    expected = rec.predict_proba(faces.images)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = np.stack([rec.predict(img).probs for img in faces.images[i::8]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_allclose(results[i], expected[i::8], atol=1e-5)


def test_auto_precision_skips_int8_shipped_past_a_failed_gate(tiny_bundle):
    manifest_path = tiny_bundle / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["evaluation"]["accuracy_gate"] = {"max_drop_pp": 0.5, "drops_pp": {"onnx/int8": 3.0, "openvino/int8": 0.1},
                                        "status": "accepted_drop"}
    manifest_path.write_text(json.dumps(m))
    assert fer_edge.Recognizer(tiny_bundle, "onnxruntime").precision == "fp32"
    assert fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="int8").precision == "int8"  # explicit: as asked


def test_model_and_bundle_together_are_refused(tiny_bundle):
    from fer_edge.bundle import Bundle

    with pytest.raises(InputError, match="not both"):
        fer_edge.Recognizer(tiny_bundle, bundle=Bundle.open(tiny_bundle))


def test_manifest_without_outputs_is_a_bundle_error(tiny_bundle):
    manifest_path = tiny_bundle / "manifest.json"
    m = json.loads(manifest_path.read_text())
    del m["model"]["outputs"]
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="outputs"):
        fer_edge.Recognizer(tiny_bundle)


# --- heads, batching and threads on a copy of the packaged bundle (no torch needed) ---------------------


def classifier_of(onnx_path, logits_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight C x F, bias C) of the Gemm that computes the logits from the embedding."""
    onnx = pytest.importorskip("onnx", reason="reading the classifier's weights needs the onnx package "
                                              "(a runtime-only install, e.g. the arm64 check, has none)")
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    gemm = next(n for n in graph.node if logits_name in n.output)
    assert gemm.op_type == "Gemm" and {a.name: a.i for a in gemm.attribute}.get("transB") == 1
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return init[gemm.input[1]], init[gemm.input[2]]


@pytest.fixture
def head_bundle(tmp_path):
    """The packaged bundle plus two linear heads: the graph's own classifier, and the same with its
    classes rolled by one (so a test can tell which head ran). The rolled one is the default."""
    import shutil

    from fer_edge.bundle import PACKAGED_DIR, Bundle, write_manifest

    root = shutil.copytree(PACKAGED_DIR / "tiny", tmp_path / "tiny-heads")
    b = Bundle.open(root)
    weight, bias = classifier_of(b.file("backbone/onnx/model.fp32.onnx"), b.manifest.model["outputs"]["logits"])
    (root / "head").mkdir()
    np.savez(root / "head" / "linear.npz", weight=weight, bias=bias)
    np.savez(root / "head" / "rolled.npz", weight=np.roll(weight, 1, axis=0), bias=np.roll(bias, 1))
    entry = {"kind": "linear", "input": "embedding", "num_features": weight.shape[1], "num_classes": weight.shape[0]}
    b.manifest.heads = {"linear": {**entry, "weights": "head/linear.npz"},
                        "rolled": {**entry, "weights": "head/rolled.npz"}}
    b.manifest.head = {"kind": "linear", "name": "rolled"}
    write_manifest(root, b.manifest)
    return root


def test_heads_run_on_the_embedding(head_bundle, faces):
    # The bundle's temperature calibrates the in-graph head only: compare the uncalibrated scores.
    graph = fer_edge.Recognizer(head_bundle, "onnxruntime", precision="fp32", head="in_graph", calibrated=False)
    linear = fer_edge.Recognizer(head_bundle, "onnxruntime", precision="fp32", head="linear")
    rolled = fer_edge.Recognizer(head_bundle, "onnxruntime", precision="fp32")  # the manifest's default head
    p = graph.predict_proba(faces.images)
    np.testing.assert_allclose(linear.predict_proba(faces.images), p, atol=1e-5)
    np.testing.assert_allclose(rolled.predict_proba(faces.images), np.roll(p, 1, axis=1), atol=1e-5)
    assert rolled.describe()["head"] == {"kind": "linear", "name": "rolled", "num_features": 256, "num_classes": 7}
    assert graph.describe()["head"]["kind"] == "in_graph"
    with pytest.raises(BundleError, match="has no head 'xgboost'; it has: in_graph, linear, rolled"):
        fer_edge.Recognizer(head_bundle, head="xgboost")


def test_predict_batch_is_one_backend_call(head_bundle, faces, monkeypatch):
    rec = fer_edge.Recognizer(head_bundle, "onnxruntime", precision="fp32")
    batches = []
    run = rec._selection.backend.run
    monkeypatch.setattr(rec._selection.backend, "run", lambda x: batches.append(len(x)) or run(x))
    rec.predict_batch(faces.images[:50])
    assert batches == [50]


def test_threads_must_be_a_positive_integer(head_bundle):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="threads must be a positive integer"):
            fer_edge.Recognizer(head_bundle, threads=bad)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_one_recognizer_with_a_head_serves_8_threads_like_sequential_calls(head_bundle, faces, backend):
    rec = fer_edge.Recognizer(head_bundle, backend, precision="int8", threads=1)
    images = list(faces.images)
    singles = np.stack([rec.predict(img).probs for img in images])
    batches = {i: rec.predict_proba(images[i : i + 5]) for i in range(0, len(images), 5)}
    errors, results = [], {}

    def work(t: int) -> None:
        try:
            for rnd in range(3):  # every thread covers every image, singles and batches interleaved
                for i in range(t, len(images), 8):
                    results[t, rnd, "single", i] = rec.predict(images[i]).probs
                for i in range(5 * t, len(images), 40):
                    results[t, rnd, "batch", i] = rec.predict_proba(images[i : i + 5])
        except Exception as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 * (len(images) + len(batches))
    for (_, _, kind, i), probs in results.items():
        np.testing.assert_allclose(probs, singles[i] if kind == "single" else batches[i], atol=1e-6)
