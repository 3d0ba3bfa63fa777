"""The checkpoint -> runtime input contract: what training computes from a checkpoint equals what
the exported graph computes on the bundle's preprocessing, also for a median-filter recipe."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import synthetic_faceset  # noqa: E402


@pytest.fixture(scope="module")
def median_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The session's trained tiny checkpoint, as if its recipe median-filtered every face (k=3)."""
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    payload["input"] = {**payload["input"], "median": 3}
    payload["config"] = {**payload["config"], "median_filter": 3}
    path = tmp_path_factory.mktemp("median") / "best.pt"
    torch.save(payload, path)
    return path


def _split_folder(root, faces, split="test"):
    from PIL import Image

    for i, (img, label) in enumerate(zip(faces.images, faces.labels)):
        d = root / split / faces.classes[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


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
    data = _split_folder(tmp_path / "data", synthetic_faceset(per_class=3, seed=21))
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
