"""Runtime test-time augmentation: the numpy views are the training module's views, and a
Recognizer with TTA is consistent (symmetric crops, batch vs single calls)."""

from __future__ import annotations

import numpy as np
import pytest

import fer_edge
from fer_edge import InputError
from fer_edge.tta import TTA_MODES, num_views, views


@pytest.mark.parametrize("mode", TTA_MODES)
@pytest.mark.parametrize("size", [(48, 48), (40, 52)])
def test_numpy_views_match_the_training_views(mode, size):
    torch = pytest.importorskip("torch")
    from fer_edge.train.tta import TTA_VIEWS

    x = np.random.default_rng(0).standard_normal((3, 1, *size)).astype(np.float32)
    want = TTA_VIEWS[mode](torch.from_numpy(x), 0.9)
    got = views(x, mode)
    assert len(got) == len(want) == num_views(mode)
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=2e-5)  # float32 summation order


def test_unknown_mode_is_refused(tiny_bundle):
    with pytest.raises(InputError, match="tta must be one of"):
        fer_edge.Recognizer(tiny_bundle, "onnxruntime", tta="five_crop")


def _symmetric(faces):
    half = faces.images[:, :, :24]
    return np.concatenate([half, half[:, :, ::-1]], axis=2)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_flip_of_a_symmetric_crop_equals_plain(tiny_bundle, faces, backend):
    crops = _symmetric(faces)[:10]
    assert (crops == crops[:, :, ::-1]).all()
    plain = fer_edge.Recognizer(tiny_bundle, backend, precision="fp32").predict_proba(crops)
    flip = fer_edge.Recognizer(tiny_bundle, backend, precision="fp32", tta="flip").predict_proba(crops)
    np.testing.assert_allclose(flip, plain, atol=1e-6)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_batch_and_single_calls_agree(tiny_bundle, faces, mode):
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta=mode)
    crops = list(faces.images[::7])
    batch = rec.predict_batch(crops)
    for crop, b in zip(crops, batch):
        one = rec.predict(crop)
        assert one.label == b.label
        np.testing.assert_allclose(one.probs, b.probs, atol=1e-5)
    probs = np.stack([b.probs for b in batch])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert rec.describe()["tta"] == mode


def test_ten_crop_averages_the_views_probabilities(tiny_bundle, faces):
    """ten_crop = mean over the 10 views of the plain probabilities of each view."""
    from fer_edge.preprocess import preprocess

    crops = faces.images[:5]
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta="ten_crop", calibrated=False)
    plain = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", calibrated=False)
    batch = preprocess(crops, rec.spec)
    want = np.mean([plain.head(None, plain._run(v)["logits"]) for v in views(batch, "ten_crop")], axis=0)
    np.testing.assert_allclose(rec.predict_proba(crops), want, atol=1e-6)
