"""ROC/AUC against hand-computed cases, plots as valid PNGs, checkpoint evaluation equal to the
exported bundle's, TTA through fer_edge.train.tta, and the run report with its heads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import synthetic_faceset, write_splits
from fer_edge.metrics import one_vs_rest_roc, roc_auc, roc_curve
from fer_edge.train.report import distance_summary, pairwise_distances

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    with Image.open(path) as im:
        im.verify()
        assert im.size[0] > 100 and im.size[1] > 100


# ---- ROC / AUC -----------------------------------------------------------------------------------------------

def test_roc_curve_by_hand():
    # Scores in decreasing order 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg); 2 positives, 2 negatives.
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_roc_auc_counts_ties_as_half():
    # Positives {0.9, 0.5, 0.3}, negatives {0.5, 0.1}: pairs won 1 + 1 + 0.5 (tie) + 1 + 0 + 1 = 4.5 of 6.
    assert roc_auc([1, 1, 0, 0, 1], [0.9, 0.5, 0.5, 0.1, 0.3]) == pytest.approx(0.75)
    assert roc_auc([1, 0, 1, 0], [0.5] * 4) == pytest.approx(0.5)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))  # one class only: undefined
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])


def test_one_vs_rest_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    s = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    # class 3 never occurs. class 0: pos {0.8, 0.3} vs neg {0.2, 0.5, 0.1}: 3 + 2 = 5 of 6; class 1: pos {0.7, 0.4} vs neg {0.1, 0.6, 0.2}: 3 + 2 = 5 of 6
    # class 2: pos {0.7} vs neg {0.1 x 4}: 1
    with pytest.raises(ValueError, match="scores must be"):
        one_vs_rest_roc(y, s[:, :2], 3)
    s4 = np.c_[s, np.zeros(5)]
    r = one_vs_rest_roc(y, s4, 4)
    assert r["auc"][:3] == pytest.approx([5 / 6, 5 / 6, 1.0]) and r["auc"][3] is None
    assert r["macro_auc"] == pytest.approx((5 / 6 + 5 / 6 + 1) / 3)


def test_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    s = rng.random((300, 7)) + np.eye(7)[y] * 0.3
    s[:50, 2] = 0.5  # ties
    ours = one_vs_rest_roc(y, s, 7)
    for k in range(7):
        assert ours["auc"][k] == pytest.approx(metrics.roc_auc_score(y == k, s[:, k]), abs=1e-12)
    probs = s / s.sum(1, keepdims=True)  # scikit-learn's multi-class form wants probabilities
    assert one_vs_rest_roc(y, probs, 7)["macro_auc"] == pytest.approx(
        metrics.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-12)


def test_pairwise_distances_by_hand():
    same, diff = pairwise_distances(np.array([[1.0, 0], [2, 0], [0, 3]]), np.array([0, 0, 1]))
    np.testing.assert_allclose(same, [0.0], atol=1e-7)  # both normalise to (1, 0)
    np.testing.assert_allclose(diff, [np.sqrt(2), np.sqrt(2)])
    s = distance_summary(same, diff)
    assert s["pair_auc"] == 1.0 and s["pairs_same"] == 1 and s["pairs_different"] == 2


# ---- plots ---------------------------------------------------------------------------------------------------

def test_plots_are_valid_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from fer_edge.train.report import plot_confusion, plot_distances, plot_roc, plot_training_curves

    rng = np.random.default_rng(1)
    labels = ["a", "b", "c"]
    y = rng.integers(0, 3, 60)
    s = rng.random((60, 3)) + np.eye(3)[y]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "train_loss": 2 / e, "train_accuracy": 0.3 + e / 10,
                                           "val_accuracy": 0.25 + e / 10}) + "\n" for e in (1, 2, 3)))
    paths = [plot_training_curves(metrics, tmp_path / "curves.png"),
             plot_confusion([[5, 1, 0], [2, 3, 1], [0, 0, 4]], labels, tmp_path / "cm.png"),
             plot_roc(y, s, labels, tmp_path / "sub" / "roc.png"),
             plot_distances(rng.normal(size=(60, 8)) + np.eye(3)[y] @ rng.normal(size=(3, 8)) * 3, y,
                            tmp_path / "dist.png")[0]]
    for p in paths:
        assert_png(p)


# ---- checkpoint evaluation, TTA, report ----------------------------------------------------------------------

def test_checkpoint_evaluation_equals_the_fp32_bundle(tiny_checkpoint, tiny_bundle, faces_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from fer_edge.cli import main
    from fer_edge.evaluate import evaluate
    from fer_edge.recognizer import Recognizer
    from fer_edge.train.report import evaluate_checkpoint

    bundle = evaluate(Recognizer(tiny_bundle, "onnxruntime", precision="fp32"), faces_folder, "test")
    ours = evaluate_checkpoint(tiny_checkpoint, faces_folder, "test", threads=1)
    agree = (ours["_scores"]["torch/fp32"].argmax(1) == bundle["_predictions"]).mean()
    assert agree >= 0.99, f"torch and bundle FP32 agree on only {agree * 100:.1f} % of the images"
    assert abs(ours["runs"]["torch/fp32"]["accuracy"] - bundle["accuracy"]) <= 1 / bundle["n"] + 1e-12
    assert ours["runs"]["torch/fp32"]["macro_auc"] > 0.5

    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(faces_folder), "--split", "test",
               "--threads", "1", "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    cli = json.loads(out.read_text())
    assert cli["runs"]["torch/fp32"]["accuracy"] == ours["runs"]["torch/fp32"]["accuracy"]
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"confusion_torch_fp32.png", "roc_torch_fp32.png",
                                                                "distances.png"}
    # A bundle has TTA (the Recognizer's) but no plots.
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(faces_folder), "--plots", str(tmp_path)]) == 1


def test_tta_flip_averages_the_mirrored_views(tiny_checkpoint, faces_folder):
    torch = pytest.importorskip("torch")
    from fer_edge.data import load_dataset
    from fer_edge.export.checkpoint import load_checkpoint
    from fer_edge.train.report import evaluate_checkpoint

    r = evaluate_checkpoint(tiny_checkpoint, faces_folder, "test", tta="flip", threads=1)
    assert set(r["runs"]) == {"torch/fp32", "torch/fp32+flip"} and r["runs"]["torch/fp32+flip"]["tta"] == "flip"
    assert list(r["agreement"]) == ["torch/fp32+flip vs torch/fp32"]
    model, meta = load_checkpoint(tiny_checkpoint)
    x = torch.from_numpy(load_dataset(faces_folder, "test").images).float().unsqueeze(1)
    x = (x / 255 - meta["input"]["mean"][0]) / meta["input"]["std"][0]
    with torch.no_grad():
        expected = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2
    np.testing.assert_allclose(r["_scores"]["torch/fp32+flip"], expected.numpy(), atol=1e-5)


@pytest.fixture
def run_with_heads(tiny_checkpoint, faces, tmp_path):
    """A run folder (best.pt, metrics.jsonl, a linear and an svm head) and a train/val/test tree."""
    from fer_edge.train.head_fitting import fit_head

    data = tmp_path / "data"
    write_splits(data, {"train": faces, "val": synthetic_faceset(per_class=4, seed=11),
                        "test": synthetic_faceset(per_class=4, seed=12)})
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "best.pt")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_loss": 1 / e, "val_accuracy": e / 4})
                                               + "\n" for e in (1, 2)))
    heads = {kind: fit_head(run / "best.pt", kind, data, test=True, n_jobs=1, log=None) for kind in ("linear", "svm")}
    return run, data, heads


def test_report_cli_writes_json_plots_and_evaluates_heads(run_with_heads, capsys):
    pytest.importorskip("matplotlib")
    from fer_edge.cli import main

    run, data, heads = run_with_heads
    assert main(["report", str(run), "--data", str(data), "--threads", "1"]) == 0
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["command"].startswith("fer-edge report ")
    # The head scored again on the same test embeddings gives the figure recorded when it was fitted.
    assert report["heads"]["linear"]["test"]["accuracy"] == heads["linear"]["test"]["accuracy"]
    assert report["heads"]["svm"]["recorded"]["test"]["accuracy"] == heads["svm"]["test"]["accuracy"]
    assert report["best_head"]["name"] in {"linear", "svm"}  # the checkpoint records no val figures
    assert report["distances"]["pair_auc"] > 0.5
    names = {p.name for p in (run / "report").glob("*.png")}
    assert {"training_curves.png", "distances.png", "confusion_torch_fp32.png", "roc_torch_fp32.png",
            "confusion_head_linear.png"} <= names
    for p in (run / "report").glob("*.png"):
        assert_png(p)
    assert "best head by val accuracy" in capsys.readouterr().out
