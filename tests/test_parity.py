"""One parity check (fer_edge.parity) for the exporter and verify."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.errors import ParityError
from fer_edge.parity import TOLERANCE, check, compare


def _golden():
    rng = np.random.default_rng(0)
    return {"input": np.zeros((8, 1, 48, 48), np.float32), "logits": rng.normal(0, 3, (8, 7)),
            "embedding": rng.random((8, 16))}


def test_within_tolerance_passes_and_reports_the_measure():
    g = _golden()
    out = {"logits": g["logits"] + 1e-5, "embedding": g["embedding"]}
    m = check("onnx/fp32", g, out)
    assert m["max_abs_diff"] == pytest.approx(1e-5) and m["top1_agreement"] == 1.0
    assert m == compare(g, out)


def test_drift_raises_parity_error_naming_the_artifact_and_limit():
    g = _golden()
    out = {"logits": g["logits"] + 0.1, "embedding": g["embedding"]}
    with pytest.raises(ParityError, match=r"openvino/fp32 differs .* max \|diff\| 0\.1 > "):
        check("openvino/fp32", g, out)
    flipped = {"logits": -g["logits"], "embedding": -g["embedding"]}
    with pytest.raises(ParityError, match="top-1 agreement .*embedding cosine"):
        check("onnx/int8", g, flipped, precision="int8")
    assert check("onnx/int8", g, flipped, {})["min_embedding_cosine"] < 0  # no limits: measured only
    assert set(TOLERANCE) == {"fp32", "fp16", "int8"}
