"""Shared fixtures: synthetic faces a tiny net can learn, a tiny checkpoint, a tiny bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from fer_edge.data import FaceSet

REPO = Path(__file__).resolve().parents[1]
FER2013 = REPO.parent / "shared" / "datasets" / "fer2013"


@pytest.fixture(scope="session")
def fer2013() -> Path:
    """The FER2013 ImageFolder root; tests that take it skip with the reason when it is absent."""
    if not (FER2013 / "test").is_dir():
        pytest.skip(f"FER2013 not found at {FER2013} (this workplace keeps it in ../shared beside the checkout)")
    return FER2013


def synthetic_faceset(per_class: int = 12, seed: int = 0, size: int = 48):
    """7 classes of 'faces' a tiny net separates in a few steps: class k is a bright bar at angle
    k*180/7 degrees on a noisy background, so predictions depend on the input (unlike random weights)."""
    from fer_edge.data import FaceSet
    from fer_edge.labels import EMOTIONS

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    images, labels = [], []
    for k in range(len(EMOTIONS)):
        theta = np.pi * k / len(EMOTIONS)
        dist = np.abs(xx * np.sin(theta) - yy * np.cos(theta))
        bar = (dist < size / 10).astype(np.float32)
        for _ in range(per_class):
            img = 60 + 140 * bar + rng.normal(0, 20, bar.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    return FaceSet(np.stack(images), np.array(labels, dtype=np.int64), [f"synthetic:{i}" for i in range(len(labels))])


def write_image_folder(folder: Path, faces: FaceSet) -> Path:
    """A FaceSet as one ImageFolder split: folder/<class>/<index>.png."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(faces.images, faces.labels)):
        d = folder / faces.classes[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    return folder


def write_splits(root: Path, sets: dict[str, FaceSet]) -> Path:
    """FaceSets as an ImageFolder tree, one split per key."""
    for split, faces in sets.items():
        write_image_folder(root / split, faces)
    return root


def write_synthetic_splits(root: Path, per_class: dict[str, int]) -> Path:
    """Synthetic faces as an ImageFolder tree, one split per key (a different seed each)."""
    return write_splits(root, {split: synthetic_faceset(per_class=n, seed=seed)
                               for seed, (split, n) in enumerate(per_class.items())})


def train_tiny_checkpoint(path: Path, steps: int = 20, seed: int = 0, batch: int = 21) -> Path:
    """A tiny_fer checkpoint in the training module's format, fitted briefly to synthetic faces.

    Minibatches of `batch` and then BatchNorm's running statistics recomputed exactly: 20 such steps
    separate the classes as well as 40 full-batch steps did (100 % on other seeds' faces, mean top
    probability 0.99 instead of a saturated 1.00) for an eighth of the compute, which was the
    largest single cost of the fast test set; with momentum-averaged statistics 20 steps leave the
    eval-mode net near chance. One torch thread: the values do not depend on the thread count, and
    on the shared 2-core box a second thread only waits."""
    import torch
    import torch.nn.functional as F

    from fer_edge.train.config import TrainConfig
    from fer_edge.train.loop import checkpoint_payload, save_atomic, to_input
    from fer_edge.train.models import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        cfg = TrainConfig(arch="tiny_fer", channels_last=False)
        faces = synthetic_faceset(seed=seed)
        x = to_input(torch.from_numpy(faces.images).unsqueeze(1), cfg)
        y = torch.from_numpy(faces.labels)
        model = create_model("tiny_fer")
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            idx = torch.randperm(len(y), generator=gen)[:batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: exact statistics of the one batch below
        with torch.no_grad():
            model(x)
        model.eval()
        save_atomic(checkpoint_payload(model, cfg, epoch=1), path)
    finally:
        torch.set_num_threads(threads)
    return path


def _requirement_missing(marker: str) -> str | None:
    """Why a test with this marker cannot run here, or None: a missing requirement is a skip that
    says so, never a failure that looks like a bug."""
    import importlib.util

    if marker == "openvino" and importlib.util.find_spec("openvino") is None:
        return "needs the openvino package: pip install 'fer-edge[openvino]'"
    if marker == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        return "needs the onnxruntime package: pip install 'fer-edge[onnxruntime]'"
    if marker == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT: pip install 'fer-edge[tensorrt]' (or JetPack's python3-libnvinfer on a Jetson)"
    if marker == "ncnn":
        absent = [m for m in ("ncnn", "pnnx") if importlib.util.find_spec(m) is None]
        if absent:
            return f"needs {' and '.join(absent)}: pip install 'fer-edge[ncnn]'"
    if marker == "gpu":
        from fer_edge.runtimes.cuda_probe import cuda_status

        devices, reason = cuda_status()
        if not devices:
            return f"needs a CUDA device: {reason}"
    return None


def pytest_collection_modifyitems(config, items):
    missing: dict[str, str | None] = {}
    for item in items:
        for marker in ("openvino", "onnxruntime", "tensorrt", "gpu", "ncnn"):
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in missing:
                missing[marker] = _requirement_missing(marker)
            if missing[marker]:
                item.add_marker(pytest.mark.skip(reason=missing[marker]))
                break


VENDOR_ENV = "FER_EDGE_TEST_CPU_VENDOR"  # e.g. AuthenticAMD: run the suite as if on that CPU


@pytest.fixture(autouse=True)
def _cpu_vendor_override(monkeypatch):
    """With FER_EDGE_TEST_CPU_VENDOR set, every test sees that CPU vendor: the way to check that no
    outcome depends on the vendor (run once with GenuineIntel, once with AuthenticAMD)."""
    vendor = os.environ.get(VENDOR_ENV)
    if vendor:
        pin_vendor(monkeypatch, vendor)


def pin_vendor(monkeypatch, vendor: str) -> None:
    from fer_edge.runtimes import machine
    from fer_edge.runtimes import openvino as ov_backend

    for module in (machine, ov_backend):
        monkeypatch.setattr(module, "cpu_vendor", lambda: vendor)


def pin_timings(monkeypatch, table: dict[str, float], default: float = 5.0) -> dict[str, float]:
    """auto/fastest measure with these milliseconds per "backend/precision" (others: `default`), so
    which backend wins is what the test says, not what this machine's CPU happens to favour."""
    from fer_edge.runtimes import selection

    monkeypatch.setattr(selection, "time_selection",
                        lambda sel, x, **kw: selection.Timing(table.get(f"{sel.name}/{sel.precision}", default)))
    return table


@pytest.fixture(scope="session")
def faces():
    return synthetic_faceset()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return train_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_bundle_master(tiny_checkpoint, tmp_path_factory, faces) -> Path:
    """ONNX + OpenVINO, FP32 + INT8, exported once per session. Use `tiny_bundle` (a copy) in tests."""
    from fer_edge.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-test"
    # 70 crops, fewer than CALIB_SIZE: only a warning. NNCF's full bias correction costs time in
    # proportion to the crops; 315 gave the same INT8 accuracy and agreement (100 %) at twice the cost.
    calib = synthetic_faceset(per_class=10, seed=1)
    return export_bundle(tiny_checkpoint, out, name="tiny-test", calib=calib, val=faces, allow_drop=True)


@pytest.fixture
def tiny_bundle(tiny_bundle_master, tmp_path) -> Path:
    """A private copy, so a test may tamper with it."""
    return Path(shutil.copytree(tiny_bundle_master, tmp_path / "tiny-test"))


@pytest.fixture
def faces_folder(faces, tmp_path) -> Path:
    """The synthetic faces written as an ImageFolder tree with a test/ split."""
    return write_splits(tmp_path / "synthetic", {"test": faces})
