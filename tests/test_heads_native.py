"""Heads at run time: the compiled XGBoost head end to end (xgboost2c -> TL2cgen C -> CMake ->
ctypes, and the C API example), the linear head and the in-graph head.

A tiny XGBoost model (7 classes, 20 rounds, depth 3) on the packaged bundle's 256-d embeddings
compiles in seconds; its outputs are compared with XGBoost's own on the bundle's golden embeddings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from fer_edge.bundle import PACKAGED_DIR, Bundle, write_manifest, zip_bundle
from fer_edge.errors import BundleError, ExportError, FerEdgeError, InputError

xgboost = pytest.importorskip("xgboost")
pytest.importorskip("treelite")
pytest.importorskip("tl2cgen")

from fer_edge.export.xgboost2c import xgboost2c
from fer_edge.runtimes.head_build import platform_tag
from fer_edge.runtimes.heads import (
    HEADS,
    CompiledTreeHead,
    InGraphHead,
    LinearHead,
    build_head,
    load_head,
    softmax,
)

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("cc") is None,
                                 reason="needs cmake and a C compiler on PATH")


def _softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    g = PACKAGED_DIR / "tiny" / "golden"
    # The first 8 golden rows of the packaged default (it ships 32; the tests below count 8).
    return {"embedding": np.load(g / "embedding.npy")[:8], "logits": np.load(g / "logits.npy")[:8]}


@pytest.fixture(scope="module")
def booster(golden, tmp_path_factory) -> tuple[Path, object]:
    """multi:softprob, 7 classes, 20 rounds, depth 3, fitted on jittered golden embeddings."""
    rng = np.random.default_rng(0)
    base = golden["embedding"]
    idx = rng.integers(0, len(base), 600)
    x = np.maximum(base[idx] * rng.normal(1.0, 0.3, (600, base.shape[1])) + rng.normal(0, 0.05, (600, base.shape[1])),
                   0).astype(np.float32)
    y = np.where(rng.random(600) < 0.8, golden["logits"].argmax(1)[idx], rng.integers(0, 7, 600))
    y[:7] = np.arange(7)  # every class present
    bst = xgboost.train({"objective": "multi:softprob", "num_class": 7, "max_depth": 3, "eta": 0.3, "nthread": 1},
                        xgboost.DMatrix(x, label=y), num_boost_round=20)
    path = tmp_path_factory.mktemp("xgb") / "model.ubj"
    bst.save_model(path)
    return path, bst


@pytest.fixture(scope="module")
def head_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("head-cache")


@pytest.fixture(scope="module")
def bundle_master(booster, golden, head_cache, tmp_path_factory) -> Path:
    """The packaged tiny bundle plus heads.xgboost (compiled here) and heads.linear, laid out as
    the exporter does: xgboost2c's paths moved under head/xgboost/."""
    root = Path(shutil.copytree(PACKAGED_DIR / "tiny", tmp_path_factory.mktemp("b") / "tiny-heads"))
    out = root / "head" / "xgboost"
    out.mkdir(parents=True)
    shutil.copy2(booster[0], out / "model.ubj")
    entry = xgboost2c(out / "model.ubj", out, num_features=256, num_classes=7, cache_dir=head_cache,
                      check_rows=golden["embedding"], build=shutil.which("cmake") is not None)
    prefix = "head/xgboost/"
    entry.update(model=prefix + "model.ubj", sources=prefix + entry["sources"],
                 libraries={k: prefix + v for k, v in entry["libraries"].items()})
    rng = np.random.default_rng(1)
    np.savez(root / "head" / "linear.npz", weight=rng.normal(0, 1, (7, 256)).astype(np.float32),
             bias=rng.normal(0, 1, 7).astype(np.float32))
    manifest = Bundle.open(root, verify=False).manifest
    manifest.heads = {"xgboost": entry, "linear": {"kind": "linear", "input": "embedding", "weights": "head/linear.npz",
                                                   "num_features": 256, "num_classes": 7}}
    write_manifest(root, manifest)
    return root


@pytest.fixture
def bundle(bundle_master, tmp_path) -> Path:
    return Path(shutil.copytree(bundle_master, tmp_path / "tiny-heads"))


def _edit_manifest(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --- the compiled head -------------------------------------------------------------------------

@needs_cmake
def test_converter_records_sources_library_versions_and_parity(bundle_master):
    entry = Bundle.open(bundle_master).manifest.heads["xgboost"]
    src = bundle_master / entry["sources"]
    assert {"header.h", "main.c", "fer_head.c", "fer_head.h", "CMakeLists.txt"} <= {p.name for p in src.iterdir()}
    assert "project(fer_head" in (src / "CMakeLists.txt").read_text()  # not TL2cgen's sample name 'mushroom'
    assert entry["libraries"] == {platform_tag(): "head/xgboost/lib/" + platform_tag() + "/libfer_head.so"}
    assert (entry["abi"], entry["num_features"], entry["num_classes"]) == (1, 256, 7)
    assert entry["treelite"] and entry["tl2cgen"]
    assert entry["parity"]["rows"] == 8 and entry["parity"]["max_abs_diff"] <= ATOL


@needs_cmake
def test_compiled_head_equals_xgboost_on_golden_embeddings(bundle, booster, golden):
    head = load_head(bundle, "xgboost")
    assert isinstance(head, CompiledTreeHead)
    expected = booster[1].inplace_predict(golden["embedding"])
    got = head(golden["embedding"], golden["logits"])
    assert got.dtype == np.float32 and got.shape == (8, 7)
    assert np.abs(got - expected).max() <= ATOL
    assert (got.argmax(1) == expected.argmax(1)).all()
    d = head.describe()
    assert (d["kind"], d["num_features"], d["num_classes"], d["abi"]) == ("xgboost", 256, 7, 1)


@needs_cmake
def test_nan_is_missing_and_inf_a_value_as_in_xgboost(bundle, booster, golden):
    """XGBoost's default `missing` is NaN: such a feature takes each split's default branch;
    inplace_predict compares +-inf as values. The compiled head does the same."""
    x = np.repeat(golden["embedding"], 3, axis=0)
    x[0, :] = np.nan
    x[1, ::3] = np.nan
    x[2, 5] = np.inf
    x[3, 7] = -np.inf
    got = load_head(bundle, "xgboost")(x)
    assert np.abs(got - booster[1].inplace_predict(x)).max() <= ATOL


@needs_cmake
def test_bad_input_gives_clear_errors(bundle, golden):
    head = load_head(bundle, "xgboost")
    with pytest.raises(InputError, match=r"shape \(N, 256\).*\(8, 255\)"):
        head(golden["embedding"][:, :255])
    with pytest.raises(InputError, match=r"shape \(N, 256\)"):
        head(golden["embedding"][0])
    with pytest.raises(InputError, match="numeric"):
        head(np.array([["a"] * 256]))
    with pytest.raises(InputError, match="required"):
        head(None)
    assert head(np.zeros((0, 256), np.float32)).shape == (0, 7)
    # The C wrapper checks the width itself too: the ctypes layer reports its message.
    with pytest.raises(FerEdgeError, match="code -3.*feature count"):
        head.lib.predict(np.zeros((2, 255), np.float32))


@needs_cmake
def test_zipped_bundle_loads_its_compiled_head(bundle, golden, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    z = zip_bundle(bundle, tmp_path / "tiny-heads.zip")
    a = load_head(z, "xgboost")(golden["embedding"])
    b = load_head(bundle, "xgboost")(golden["embedding"])
    assert np.array_equal(a, b)


@needs_cmake
def test_eight_threads_equal_sequential(bundle, golden):
    head = load_head(bundle, "xgboost")
    rng = np.random.default_rng(3)
    chunks = [np.maximum(golden["embedding"][rng.integers(0, 8, 64)] + rng.normal(0, 0.1, (64, 256)), 0)
              .astype(np.float32) for _ in range(8)]
    sequential = [head(c) for c in chunks]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            results[i] = head(chunks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, s) for r, s in zip(results, sequential))
    split = load_head(bundle, "xgboost", threads=4)  # one call split over 4 threads
    assert np.array_equal(split(np.concatenate(chunks)), np.concatenate(sequential))


# --- refusals ------------------------------------------------------------------------------------

def test_converter_refuses_a_feature_or_class_count_mismatch(booster, tmp_path):
    with pytest.raises(ExportError, match=r"takes 256 features.*backbone gives 255 features"):
        xgboost2c(booster[0], tmp_path / "a", num_features=255, num_classes=7, build=False)
    with pytest.raises(ExportError, match=r"predicts 7 classes.*8 classes"):
        xgboost2c(booster[0], tmp_path / "b", num_features=256, num_classes=8, build=False)
    assert not (tmp_path / "a").exists()


def test_converter_refuses_a_non_softprob_model(tmp_path):
    rng = np.random.default_rng(0)
    reg = xgboost.train({"objective": "reg:squarederror", "max_depth": 2, "nthread": 1},
                        xgboost.DMatrix(rng.normal(size=(50, 4)), label=rng.normal(size=50)), num_boost_round=2)
    reg.save_model(tmp_path / "reg.json")
    with pytest.raises(ExportError, match="softmax classifier"):
        xgboost2c(tmp_path / "reg.json", tmp_path / "out", num_features=4, num_classes=7, build=False)


@needs_cmake
def test_load_refuses_a_head_that_does_not_fit_the_backbone(bundle):
    def doctor(d):
        d["heads"]["xgboost"]["num_features"] = 128

    _edit_manifest(bundle, doctor)
    with pytest.raises(BundleError, match=r"takes 128 features but the backbone's embedding has 256"):
        load_head(bundle, "xgboost")


@needs_cmake
def test_load_refuses_a_library_that_disagrees_with_the_manifest(bundle):
    def doctor(d):  # backbone and head entry agree with each other, not with the compiled library
        d["model"]["feature_dim"] = 128
        d["heads"]["xgboost"]["num_features"] = 128

    _edit_manifest(bundle, doctor)
    # Opening the bundle refuses the edit (the graph's embedding is 256 wide) ...
    with pytest.raises(BundleError, match=r"manifest does not match its artifacts"):
        load_head(bundle, "xgboost")
    # ... and the compiled head checks the library against the manifest on its own too.
    with pytest.raises(BundleError, match=r"has 256 features and 7 classes; the manifest says 128 features"):
        load_head(Bundle.open(bundle, verify=False), "xgboost")


@needs_cmake
def test_missing_library_says_how_to_build_and_build_head_fixes_it(bundle, booster, golden, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "fresh-cache"))  # nothing built yet

    def drop_library(d):
        d["heads"]["xgboost"]["libraries"] = {}

    _edit_manifest(bundle, drop_library)
    with pytest.raises(BundleError, match=rf"no compiled library for {platform_tag()}.*fer-edge build-head"):
        load_head(bundle, "xgboost")
    from fer_edge.cli import main

    assert main(["build-head", str(bundle), "--head", "xgboost"]) == 0  # CMake on the bundle's sources
    head = load_head(bundle, "xgboost")
    assert str(tmp_path / "fresh-cache") in head.describe()["library"]
    assert np.abs(head(golden["embedding"]) - booster[1].inplace_predict(golden["embedding"])).max() <= ATOL
    with pytest.raises(BundleError, match="no compiled head 'linear' with sources"):
        build_head(bundle, "linear")


def test_unknown_heads_are_refused_by_name(bundle_master):
    with pytest.raises(BundleError, match="no head 'svm'; it has: in_graph, xgboost, linear"):
        load_head(bundle_master, "svm")
    assert set(HEADS) >= {"in_graph", "linear", "xgboost"}


# --- the C API and its example --------------------------------------------------------------

@needs_cmake
def test_top_level_cmake_builds_the_head_c_api_and_example(bundle, booster, golden, tmp_path):
    build = tmp_path / "build"
    entry = Bundle.open(bundle).manifest.heads["xgboost"]
    for cmd in (["cmake", "-S", str(REPO), "-B", str(build), f"-DFER_HEAD_SRC={bundle / entry['sources']}"],
                ["cmake", "--build", str(build), "--parallel", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    x = golden["embedding"].copy()
    x[1, 10] = np.nan
    np.savetxt(tmp_path / "emb.txt", x, fmt="%.9g", header="golden embeddings, one per line")
    labels = Bundle.open(bundle).manifest.labels
    expected = booster[1].inplace_predict(x)
    exe = build / "classify_embedding"
    linked = ["--labels", ",".join(labels), "--probs", str(tmp_path / "emb.txt")]
    by_path = ["--library", str(bundle / entry["libraries"][platform_tag()]), "--probs", "-"]
    for args, stdin in ((linked, None), (by_path, (tmp_path / "emb.txt").read_text())):
        proc = subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        rows = [line.split("\t") for line in proc.stdout.splitlines()]
        assert len(rows) == 8
        probs = np.array([[float(v) for v in r[3].split(",")] for r in rows])
        assert np.abs(probs - expected).max() <= ATOL
        assert [int(r[0]) for r in rows] == expected.argmax(1).tolist()
    assert [r[1] for r in rows] == ["-"] * 8
    bad = subprocess.run([str(exe)], input="1 2 3\n", capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "has 3 numbers; the head takes 256 features" in bad.stderr


# --- linear and in-graph heads ---------------------------------------------------------------

def test_linear_head_numerics(bundle_master, golden):
    head = load_head(bundle_master, "linear")
    assert isinstance(head, LinearHead)
    with np.load(bundle_master / "head" / "linear.npz") as z:
        w, b = z["weight"].astype(np.float64), z["bias"].astype(np.float64)
    x = golden["embedding"]
    expected = _softmax64(x.astype(np.float64) @ w.T + b)
    got = head(x)
    assert got.dtype == np.float32 and np.abs(got - expected).max() < 1e-6
    big = head(x * 1e4)  # logits in the tens of thousands: no overflow, still a distribution
    assert np.isfinite(big).all() and np.allclose(big.sum(1), 1, atol=1e-6)
    with pytest.raises(InputError, match="non-finite"):
        head(np.full((1, 256), np.nan, np.float32))
    with pytest.raises(InputError, match=r"\(N, 256\)"):
        head(x[:, :10])


def test_linear_head_refuses_weights_that_disagree_with_the_manifest(bundle):
    np.savez(bundle / "head" / "linear.npz", weight=np.zeros((7, 100), np.float32), bias=np.zeros(7, np.float32))
    write_manifest(bundle, Bundle.open(bundle, verify=False).manifest)
    with pytest.raises(BundleError, match=r"weight \(7, 100\).*\(7, 256\)"):
        load_head(bundle, "linear")


def test_in_graph_head_is_a_stable_softmax_and_the_default(bundle_master, golden):
    head = load_head(bundle_master)  # the manifest's default head
    assert isinstance(head, InGraphHead)
    assert np.abs(head(golden["embedding"], golden["logits"]) - _softmax64(golden["logits"])).max() < 1e-6
    extreme = head(None, np.array([[1000.0, -1000.0, 0, 0, 0, 0, 0], [-1e30, 0, 0, 0, 0, 0, 0]]))
    assert np.isfinite(extreme).all() and extreme[0, 0] == pytest.approx(1.0)
    assert np.array_equal(softmax(np.zeros((1, 7), np.float32)), np.full((1, 7), 1 / 7, np.float32))
    with pytest.raises(InputError, match=r"logits must have shape \(N, 7\)"):
        head(None, golden["logits"][:, :6])


@needs_cmake
def test_default_head_can_be_the_compiled_one(bundle, golden):
    def make_default(d):
        d["head"] = {"kind": "xgboost", "name": "xgboost"}

    _edit_manifest(bundle, make_default)
    assert isinstance(load_head(bundle), CompiledTreeHead)

    def break_default(d):
        d["head"] = {"kind": "linear", "name": "xgboost"}

    _edit_manifest(bundle, break_default)
    with pytest.raises(BundleError, match="default head"):
        load_head(bundle)
