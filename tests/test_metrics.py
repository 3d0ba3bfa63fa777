"""fer_edge.metrics against a hand-computed example, and against scikit-learn when it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.labels import EMOTIONS
from fer_edge.metrics import classification_report, confusion_matrix

# Three classes, ten samples. Worked by hand:
#   true a: predicted a a a b      -> row [3, 1, 0]
#   true b: predicted b b c        -> row [0, 2, 1]
#   true c: predicted c a c        -> row [1, 0, 2]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 2])
CM = [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
# precision = tp / column sum: a 3/4, b 2/3, c 2/3; recall = tp / row sum: a 3/4, b 2/3, c 2/3
# f1 = 2pr/(p+r) equals p here since p == r per class.
P = [3 / 4, 2 / 3, 2 / 3]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    assert cm.tolist() == CM
    assert confusion_matrix(list(Y_TRUE), list(Y_PRED), 3).tolist() == CM  # plain lists work too


def test_confusion_matrix_counts_repeats_and_pads():
    cm = confusion_matrix(np.array([1, 1, 1]), np.array([2, 2, 2]), 4)
    expected = np.zeros((4, 4), np.int64)
    expected[1, 2] = 3
    np.testing.assert_array_equal(cm, expected)  # np.add.at, not fancy-index assignment


def test_report_by_hand():
    r = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert r["n"] == 10
    assert r["accuracy"] == pytest.approx(7 / 10)
    assert r["confusion_matrix"] == CM
    assert r["labels"] == ["a", "b", "c"]
    for name, p in zip("abc", P):
        pc = r["per_class"][name]
        assert pc["precision"] == pytest.approx(p)
        assert pc["recall"] == pytest.approx(p)
        assert pc["f1"] == pytest.approx(p)
    assert [r["per_class"][n]["support"] for n in "abc"] == [4, 3, 3]
    assert r["macro_precision"] == pytest.approx(sum(P) / 3)
    assert r["macro_recall"] == pytest.approx(sum(P) / 3)
    assert r["macro_f1"] == pytest.approx(sum(P) / 3)


def test_report_unequal_precision_recall_by_hand():
    # class 0: tp 2, fp 2 (two 1s predicted as 0), fn 0 -> p 1/2, r 1, f1 2/3
    # class 1: tp 1, fp 0, fn 2 -> p 1, r 1/3, f1 1/2
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 0, 1])
    r = classification_report(y_true, y_pred, ["x", "y"])
    assert r["per_class"]["x"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 2}
    assert r["per_class"]["y"]["precision"] == 1.0
    assert r["per_class"]["y"]["recall"] == pytest.approx(1 / 3)
    assert r["per_class"]["y"]["f1"] == pytest.approx(0.5)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert r["accuracy"] == pytest.approx(3 / 5)


def test_report_macro_ignores_classes_absent_from_truth():
    # Class 2 never occurs in y_true and is never predicted: zero everywhere, not averaged in.
    y = np.array([0, 1, 1, 0])
    r = classification_report(y, y, ["a", "b", "c"])
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["macro_precision"] == 1.0
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_report_class_never_predicted_has_zero_precision_not_nan():
    r = classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["a"]["precision"] == 0.5
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert all(np.isfinite(v) for v in (r["macro_precision"], r["macro_recall"], r["macro_f1"]))


def test_report_empty_input():
    r = classification_report(np.array([], int), np.array([], int), list(EMOTIONS))
    assert r["n"] == 0 and r["accuracy"] == 0.0 and r["macro_f1"] == 0.0
    assert r["confusion_matrix"] == [[0] * 7] * 7


def test_report_is_json_serialisable():
    import json

    r = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert json.loads(json.dumps(r)) == r


def test_confusion_matrix_out_of_range_label_raises():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_confusion_matrix_negative_label_raises():
    with pytest.raises((IndexError, ValueError)):
        confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed; hand-computed tests cover this")
    rng = np.random.default_rng(seed)
    n_cls = len(EMOTIONS)
    y_true = rng.integers(0, n_cls, size=500)
    # Mostly right, with class-dependent confusion so the per-class numbers differ.
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, n_cls, size=500))
    if seed == 2:  # a class that never occurs in the truth, only among predictions
        y_true[y_true == 1] = 0
    r = classification_report(y_true, y_pred, list(EMOTIONS))
    labels = list(range(n_cls))
    np.testing.assert_array_equal(np.array(r["confusion_matrix"]), skm.confusion_matrix(y_true, y_pred, labels=labels))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    p, rc, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, name in enumerate(EMOTIONS):
        pc = r["per_class"][name]
        assert pc["precision"] == pytest.approx(p[i])
        assert pc["recall"] == pytest.approx(rc[i])
        assert pc["f1"] == pytest.approx(f1[i])
        assert pc["support"] == support[i]
    present = sorted(set(y_true.tolist()))  # fer_edge macro-averages over the classes in y_true
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    assert r["macro_precision"] == pytest.approx(
        skm.precision_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    assert r["macro_recall"] == pytest.approx(
        skm.recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    if seed != 2:  # with every class present this is exactly sklearn's default macro F1
        assert r["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
