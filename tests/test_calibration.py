"""Temperature scaling and expected calibration error (numpy), and the round trip through a bundle."""

from __future__ import annotations

import numpy as np
import pytest

import fer_edge
from fer_edge.calibration import apply_temperature, expected_calibration_error, fit_temperature


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_fit_recovers_the_temperature_of_overconfident_scores():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 7))
    # Labels drawn from softmax(z / 2): scores softmax(z) are overconfident by T = 2.
    p_true = _softmax(z / 2)
    y = (p_true.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    t = fit_temperature(_softmax(z), y)
    assert t == pytest.approx(2.0, rel=0.05)
    calibrated = apply_temperature(_softmax(z), t)
    np.testing.assert_allclose(calibrated, p_true, atol=0.03)
    assert (calibrated.argmax(1) == z.argmax(1)).all()
    assert expected_calibration_error(calibrated, y) < expected_calibration_error(_softmax(z), y) / 3


def test_apply_temperature_is_softmax_of_scaled_logits_and_inverts():
    z = np.random.default_rng(1).normal(0, 2, (50, 7))
    p = _softmax(z)
    np.testing.assert_allclose(apply_temperature(p, 1.7), _softmax(z / 1.7), atol=1e-9)
    np.testing.assert_allclose(apply_temperature(apply_temperature(p, 1.7), 1 / 1.7), p, atol=1e-9)
    assert apply_temperature(p, 1.0) is p
    for bad in (0.0, -1, float("nan"), float("inf"), "2", True, None):
        with pytest.raises(fer_edge.InputError, match="temperature must be positive"):
            apply_temperature(p, bad)
    np.testing.assert_allclose(apply_temperature(p, np.float32(1.7)), _softmax(z / 1.7), atol=1e-6)


def test_ece_on_known_cases():
    y = np.zeros(10, dtype=int)
    sure = np.tile([1.0, 0, 0, 0, 0, 0, 0], (10, 1))
    assert expected_calibration_error(sure, y) == 0.0
    p = np.tile([0.8, 0.2, 0, 0, 0, 0, 0], (10, 1))
    y_half = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(p, y_half) == pytest.approx(0.3)


def test_temperature_round_trip_fitted_stored_applied(tiny_bundle, faces):
    """Export fitted T on val and stored it; the Recognizer applies it (argmax unchanged)."""
    from fer_edge.bundle import Bundle

    m = Bundle.open(tiny_bundle).manifest
    entry = m.temperature
    assert entry["head"] == "in_graph" and entry["value"] > 0
    assert entry["val_nll"]["after"] <= entry["val_nll"]["before"] + 1e-9
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32")
    raw = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", calibrated=False)
    assert rec.temperature == entry["value"] and raw.temperature == 1.0
    got, base = rec.predict_proba(faces.images), raw.predict_proba(faces.images)
    np.testing.assert_allclose(got, apply_temperature(base, entry["value"]), atol=1e-6)
    assert (got.argmax(1) == base.argmax(1)).all()
    # The same T refitted from the raw val outputs (here: the synthetic val set) agrees.
    assert fit_temperature(base, faces.labels) == pytest.approx(entry["value"], rel=1e-3)



def test_each_tta_mode_has_its_own_temperature(tiny_bundle, faces):
    """Export fits one T per test-time augmentation mode on the same val outputs the mode serves;
    a Recognizer with tta uses its mode's T, and its probabilities are the raw averaged views at it."""
    import json

    from fer_edge.bundle import Bundle

    entry = Bundle.open(tiny_bundle).manifest.temperature
    assert set(entry["by_tta"]) == {"flip", "ten_crop"}
    for mode, fitted in entry["by_tta"].items():
        assert fitted["value"] > 0 and fitted["val_nll"]["after"] <= fitted["val_nll"]["before"] + 1e-9
        rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta=mode)
        raw = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta=mode, calibrated=False)
        assert rec.temperature == fitted["value"] and raw.temperature == 1.0
        got, base = rec.predict_proba(faces.images), raw.predict_proba(faces.images)
        np.testing.assert_allclose(got, apply_temperature(base, fitted["value"]), atol=1e-6)
        assert fit_temperature(base, faces.labels) == pytest.approx(fitted["value"], rel=1e-3)
    # A bundle exported before per-mode temperatures: every mode uses the plain one.
    path = tiny_bundle / "manifest.json"
    m = json.loads(path.read_text())
    del m["temperature"]["by_tta"]
    path.write_text(json.dumps(m))
    rec = fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta="ten_crop")
    assert rec.temperature == entry["value"]
    m["temperature"]["by_tta"] = {"flip": {"value": -2}}
    path.write_text(json.dumps(m))
    with pytest.raises(fer_edge.BundleError, match="by_tta.flip.value must be a positive finite number"):
        fer_edge.Recognizer(tiny_bundle, "onnxruntime", precision="fp32", tta="flip")


def test_heads_apply_the_temperature_to_their_scores():
    """Heads with scores fold T into their softmax (softmax(z / T)); any other head gets the generic
    softmax(log p / T); both equal apply_temperature of the uncalibrated probabilities."""
    from fer_edge.runtimes.heads import Head, InGraphHead, LinearHead

    rng = np.random.default_rng(0)
    emb, logits = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32) * 3

    class Fixed(Head):  # a third-party head that only returns probabilities
        kind, num_classes = "fixed", 7

        @classmethod
        def from_manifest(cls, bundle, name, entry, *, threads=None):
            return cls()

        def __call__(self, embedding, logits=None):
            return _softmax(logits)

        def describe(self):
            return {"kind": self.kind, "name": "fixed"}

    heads = [InGraphHead(7), LinearHead(rng.normal(size=(7, 4)), rng.normal(size=7)), Fixed()]
    for head in heads:
        for t in (0.5, 1.0, 1.7):
            np.testing.assert_allclose(head.probabilities(emb, logits, t), apply_temperature(head(emb, logits), t),
                                       atol=1e-6)
        assert head.probabilities(emb, logits, 1.0).dtype == np.float32
        with pytest.raises(fer_edge.InputError, match="temperature"):
            head.probabilities(emb, logits, -1.0)


def test_export_says_when_a_temperature_fit_hits_its_search_bound():
    """Val outputs whose argmax is always right have no interior NLL optimum (sharper is always
    better): the fit ends at the bound, and the export records a warning instead of passing the
    number off as calibration."""
    from fer_edge.calibration import T_SEARCH
    from fer_edge.export.gate import ValResult
    from fer_edge.export.temperature import temperature_entry

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    sure = _softmax(0.1 * np.eye(7)[y])  # right every time, by a small margin
    notes: list[str] = []
    entry = temperature_entry({"onnx/fp32": ValResult(1.0, 1.0, 200, sure, y)}, "synthetic", notes=notes)
    assert entry["value"] == pytest.approx(T_SEARCH[0], rel=0.01) and "by_tta" not in entry
    assert len(notes) == 1 and "search bound" in notes[0] and "tta none" in notes[0]
    noisy = _softmax(rng.normal(size=(200, 7)) + 2.0 * np.eye(7)[y])
    notes.clear()
    entry = temperature_entry({"onnx/fp32": ValResult(0.0, 0.0, 200, noisy, y)}, "synthetic", notes=notes)
    assert T_SEARCH[0] < entry["value"] < T_SEARCH[1] and notes == []
