"""Embeddings through the pool hook, and every head kind fitted on them (tiny sizes, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import synthetic_faceset, write_splits

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
xgb = pytest.importorskip("xgboost")

from fer_edge.errors import InputError  # noqa: E402
from fer_edge.train.embeddings import extract_embeddings, file_sha256, pool_hook  # noqa: E402
from fer_edge.train.head_fitting import (FITTERS as HEADS, fit_head, random_search, sample_params,  # noqa: E402
                                         validate_head_json)
from fer_edge.train.head_fitting import LogisticHead as LinearHead  # noqa: E402
from fer_edge.train.head_fitting import load_fitted_head as load_head  # noqa: E402

# Small settings so each kind fits in about a second on one core.
TINY = {"xgboost": {"n_estimators": 20, "max_depth": 3, "early_stopping_rounds": 5},
        "random_forest": {"n_estimators": 20},
        "mlp": {"hidden": [32], "max_epochs": 40, "patience": 5},
        "svm": {}, "linear": {}}


@pytest.fixture(scope="module")
def model_and_spec(tiny_checkpoint):
    from fer_edge.export import input_spec
    from fer_edge.export.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    model, meta = load_checkpoint(tiny_checkpoint)
    return model, input_spec(meta)


@pytest.fixture(scope="module")
def embeddings(model_and_spec, faces):
    """Train: the session's synthetic faces; val: fresh ones (another seed). Noisier than the
    training images, so heads do not all sit at 100 %."""
    model, spec = model_and_spec
    val = synthetic_faceset(per_class=6, seed=7)
    return (extract_embeddings(model, faces.images, spec), faces.labels,
            extract_embeddings(model, val.images, spec), val.labels)


@pytest.fixture(scope="module")
def split_folder(faces, tmp_path_factory):
    """train/ val/ test/ ImageFolder tree of synthetic faces."""
    return write_splits(tmp_path_factory.mktemp("heads_data"), {
        "train": faces, "val": synthetic_faceset(per_class=5, seed=8), "test": synthetic_faceset(per_class=5, seed=9)})


def test_hook_embeddings_equal_forward_features(model_and_spec, faces):
    from fer_edge.preprocess import preprocess

    model, spec = model_and_spec
    emb = extract_embeddings(model, faces.images, spec, batch_size=32)  # several batches
    with torch.inference_mode():
        ref = model.forward_features(torch.from_numpy(preprocess(faces.images, spec))).numpy()
    assert emb.shape == (len(faces), model.feature_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="no `pool`"):
        with pool_hook(torch.nn.Linear(2, 2)):
            pass


def test_registry_holds_every_kind():
    assert set(HEADS) == {"xgboost", "linear", "svm", "random_forest", "mlp"}
    assert {k for k, h in HEADS.items() if h.exportable} == {"xgboost", "linear"}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_each_head_fits_and_beats_chance(kind, embeddings):
    x, y, xv, yv = embeddings
    head = HEADS[kind](7, TINY[kind], n_jobs=1, seed=0)
    head.fit(x, y, xv, yv)
    scores = head.scores(xv)
    assert scores.shape == (len(yv), 7) and np.isfinite(scores).all()
    acc = (scores.argmax(1) == yv).mean()
    assert acc > 0.5, f"{kind}: val accuracy {acc:.2f} is near chance (1/7)"
    if head.scores_are == "probabilities":
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)


def test_linear_head_folds_standardization_into_weights(embeddings):
    from sklearn.linear_model import LogisticRegression

    x, y, xv, yv = embeddings
    head = LinearHead(7, {"C": 0.5})
    head.fit(x, y, xv, yv)
    mean, std = x.mean(0), np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit((x - mean) / std, y).predict_proba((xv - mean) / std)
    np.testing.assert_allclose(head.scores(xv), ref, atol=1e-4)


def test_random_search_runs_distinct_fits_and_keeps_the_best(embeddings):
    x, y, xv, yv = embeddings
    best, trials = random_search("xgboost", 7, x, y, xv, yv, n_iter=3, params={"n_estimators": 8}, n_jobs=1)
    assert len(trials) == 3
    assert all(t["params"]["n_estimators"] == 8 for t in trials)  # pinned
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3
    assert (best.scores(xv).argmax(1) == yv).mean() == max(t["val_accuracy"] for t in trials)
    assert sample_params(HEADS["xgboost"].space, 4, seed=1) == sample_params(HEADS["xgboost"].space, 4, seed=1)


def test_xgboost_ubj_round_trip_is_a_plain_softprob_booster(embeddings, tmp_path):
    x, y, xv, yv = embeddings
    head = HEADS["xgboost"](7, {"n_estimators": 200, "max_depth": 2, "early_stopping_rounds": 3}, n_jobs=1)
    head.fit(x, y, xv, yv)
    assert head.fit_info["early_stopped"] and head.fit_info["rounds"] < 200
    name = head.save(tmp_path)
    booster = xgb.Booster(model_file=str(tmp_path / name))
    config = json.loads(booster.save_config())["learner"]
    assert config["objective"]["name"] == "multi:softprob"
    assert config["learner_model_param"]["num_class"] == "7"
    assert int(config["learner_model_param"]["num_feature"]) == x.shape[1]
    assert booster.num_boosted_rounds() == head.fit_info["rounds"]  # trees cut at the best round
    assert booster.attr("best_iteration") is None
    np.testing.assert_array_equal(booster.predict(xgb.DMatrix(xv)), head.scores(xv))


def test_fit_head_writes_a_valid_head_json_and_reloads(tiny_checkpoint, split_folder, tmp_path):
    out = tmp_path / "heads" / "linear"
    meta = fit_head(tiny_checkpoint, "linear", split_folder, out=out, test=True, cache_dir=tmp_path / "cache",
                    command="fer-edge fit-head test", log=None)
    on_disk = json.loads((out / "head.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    validate_head_json(on_disk, out)
    assert on_disk["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert (on_disk["num_features"], on_disk["num_classes"], on_disk["model"]) == (256, 7, "linear.npz")
    assert on_disk["val"]["accuracy"] > 0.5 and on_disk["test"]["n"] == 35
    with np.load(out / "linear.npz") as z:
        assert z["weight"].shape == (7, 256) and z["weight"].dtype == np.float32 and z["bias"].shape == (7,)
    head, _ = load_head(out)
    cached = list((tmp_path / "cache").glob("val-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:
        val_x, val_y = z["features"], z["labels"]
    assert (head.scores(val_x).argmax(1) == val_y).mean() == pytest.approx(on_disk["val"]["accuracy"])


def test_research_only_head_via_cli(tiny_checkpoint, split_folder, tmp_path):
    from fer_edge.cli import main

    out = tmp_path / "svm"
    rc = main(["fit-head", str(tiny_checkpoint), "--kind", "svm", "--data", str(split_folder), "--search", "2",
               "--out", str(out), "--n-jobs", "1"])
    assert rc == 0
    meta = json.loads((out / "head.json").read_text())
    assert meta["model"] is None and meta["exportable"] is False and len(meta["search"]["trials"]) == 2
    assert meta["command"].startswith("fer-edge fit-head ")
    validate_head_json(meta, out)
    with pytest.raises(InputError, match="research-only"):
        load_head(out)


def test_bad_requests_are_clear_errors(tiny_checkpoint, split_folder):
    with pytest.raises(InputError, match="unknown head kind 'boost'"):
        fit_head(tiny_checkpoint, "boost", split_folder, log=None)
    with pytest.raises(InputError, match="unknown parameters \\['depth'\\]"):
        fit_head(tiny_checkpoint, "xgboost", split_folder, params={"depth": 3}, log=None)
    with pytest.raises(InputError, match="JSON object"):
        fit_head(tiny_checkpoint, "xgboost", split_folder, params="{depth: 3", log=None)
    with pytest.raises(InputError, match="missing fields"):
        validate_head_json({"kind": "linear"})
