"""The checkpoint -> runtime input contract: what training computes from a checkpoint equals what
the exported graph computes on the bundle's preprocessing, also for a median-filter recipe."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import synthetic_faceset, write_splits  # noqa: E402


@pytest.fixture(scope="module")
def median_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The session's trained tiny checkpoint, as if its recipe median-filtered every face (k=3)."""
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    payload["input"] = {**payload["input"], "median": 3}
    payload["config"] = {**payload["config"], "median_filter": 3}
    path = tmp_path_factory.mktemp("median") / "best.pt"
    torch.save(payload, path)
    return path


def test_median_checkpoint_embeddings_equal_the_exported_graph(median_checkpoint, tmp_path):
    """fit-head and report fit heads on embed_split's features: they must be the features the
    bundle produces (preprocess with the manifest's input spec, then the exported ONNX graph)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fer_edge.data import load_dataset
    from fer_edge.export import input_spec, load_checkpoint, torch2onnx
    from fer_edge.preprocess import preprocess
    from fer_edge.train.embeddings import embed_split

    torch.set_num_threads(1)
    data = write_splits(tmp_path / "data", {"test": synthetic_faceset(per_class=3, seed=21)})
    ours = embed_split(median_checkpoint, data, "test", cache_dir="", threads=1, log=None)

    model, meta = load_checkpoint(median_checkpoint)
    spec = input_spec(meta)  # what the exporter writes into the manifest
    assert spec.median == 3
    onnx_path = torch2onnx(model, tmp_path / "model.onnx", size=spec.size, simplify=False)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    faces = load_dataset(data, "test", size=tuple(spec.size))
    bundle_embedding = sess.run(["embedding"], {spec.input_name: preprocess(faces.images, spec)})[0]

    scale = float(np.abs(bundle_embedding).max())
    assert scale > 1e-2  # trained weights: the embedding depends on the input
    np.testing.assert_allclose(ours.features, bundle_embedding, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("median", [0, 3, 5])
def test_torch_twin_equals_numpy_preprocess(median):
    from fer_edge.preprocess import InputSpec, preprocess
    from fer_edge.train.preprocess import to_model_input

    faces = synthetic_faceset(per_class=2, seed=3)
    spec = InputSpec(scale=1 / 255, mean=(0.5,), std=(0.25,), median=median)
    ours = to_model_input(torch.from_numpy(faces.images).unsqueeze(1), spec).numpy()
    np.testing.assert_allclose(ours, preprocess(faces.images, spec), rtol=0, atol=1e-6)


def test_torch_twin_refuses_what_it_cannot_take():
    from fer_edge.errors import InputError
    from fer_edge.preprocess import InputSpec
    from fer_edge.train.preprocess import to_model_input

    with pytest.raises(InputError, match="uint8"):
        to_model_input(torch.zeros(2, 1, 48, 48), InputSpec())
    with pytest.raises(InputError, match=r"size \(48, 48\)"):
        to_model_input(torch.zeros(2, 1, 40, 40, dtype=torch.uint8), InputSpec())


def test_one_input_spec_from_config_checkpoint_and_input_dict(median_checkpoint):
    from fer_edge.errors import ExportError, InputError
    from fer_edge.export import input_spec as export_input_spec
    from fer_edge.preprocess import InputSpec
    from fer_edge.train.checkpoint import CHECKPOINT_FORMAT, input_spec, load_checkpoint
    from fer_edge.train.config import TrainConfig

    _, meta = load_checkpoint(median_checkpoint)
    assert meta["format"] == CHECKPOINT_FORMAT
    spec = input_spec(meta)
    assert spec == InputSpec(scale=1 / 255, mean=(0.5,), std=(0.25,), median=3)
    assert input_spec(meta["input"]) == spec == export_input_spec(meta) == input_spec(spec)
    assert input_spec(TrainConfig(median_filter=3)) == spec
    with pytest.raises(InputError, match="not a valid input spec"):
        input_spec({"size": [48, 48], "mean": [0.5], "std": [0.0]})
    with pytest.raises(ExportError, match="not a valid input spec"):
        export_input_spec({"input": {"size": "big"}})
    with pytest.raises(InputError, match="TrainConfig"):
        input_spec(42)
