"""Classifier heads fitted on backbone embeddings: xgboost, linear, svm, random_forest, mlp.

Each kind is a small class in `FITTERS` with its defaults and random-search space. Heads are saved
in native, non-pickle files (docs/architecture.md, "Heads on embeddings"):

| kind          | model file  | format                                                         | exportable |
|---------------|-------------|----------------------------------------------------------------|------------|
| xgboost       | model.ubj   | XGBoost UBJSON, a plain `multi:softprob` booster, `num_class`  | yes        |
|               |             | classes, features in embedding order, trees cut at the best    |            |
|               |             | early-stopping round                                           |            |
| linear        | linear.npz  | `weight` (C x F float32), `bias` (C): softmax(x @ weight.T + b)  | yes        |
| mlp           | mlp.npz     | `mean`, `std` (F), `w0`, `b0`, ... `wK`, `bK`: ReLU hidden      | no (research) |
|               |             | layers on (x - mean) / std, softmax output                     |            |
| svm           | none        | scikit-learn offers no non-pickle format; only params and      | no (research) |
| random_forest | none        | figures are recorded                                           | no (research) |

The XGBoost default parameters are the best ones of Liman & Kusuma (2024) after 25 random-search
fits (subsample 0.5, 500 trees, min_child_weight 2, depth 10, learning rate 0.1, colsample 0.6).
The paper gives only that winner, not its search space; `XGBoostHead.space` is ours and contains it.
"""

from __future__ import annotations

import abc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from .._version import __version__
from ..errors import InputError
from ..metrics import scores_report
from ..probabilities import softmax

FITTERS: dict[str, type["EmbeddingHead"]] = {}  # kind -> how to fit it (runtimes.heads.HEADS: how to run it)
HEAD_JSON_REQUIRED = ("kind", "num_features", "num_classes", "labels", "model", "checkpoint_sha256", "params", "val")


def register_fitter(cls: type["EmbeddingHead"]) -> type["EmbeddingHead"]:
    FITTERS[cls.kind] = cls
    return cls


def _scatter(scores: np.ndarray, present: np.ndarray, num_classes: int, fill: float) -> np.ndarray:
    """Columns for the classes a scikit-learn model saw -> all `num_classes` columns."""
    if scores.ndim == 1:  # binary decision_function
        scores = np.stack([-scores, scores], axis=1)
    out = np.full((len(scores), num_classes), fill, dtype=np.float32)
    out[:, present] = scores
    return out


class EmbeddingHead(abc.ABC):
    """One head kind. `params` are merged over `defaults`; unknown names are an error."""

    kind: ClassVar[str]
    exportable: ClassVar[bool] = False
    model_file: ClassVar[str | None] = None
    scores_are: ClassVar[str] = "probabilities"
    defaults: ClassVar[dict[str, Any]]
    space: ClassVar[dict[str, list]]

    def __init__(self, num_classes: int, params: dict[str, Any] | None = None, *, n_jobs: int | None = None,
                 seed: int = 0, log: Callable[[str], Any] | None = None) -> None:
        params = dict(params or {})
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise InputError(f"{self.kind} head: unknown parameters {sorted(unknown)}; known: {sorted(self.defaults)}")
        self.num_classes = num_classes
        self.params = {**self.defaults, **params}
        self.n_jobs, self.seed, self.log = n_jobs, seed, log
        self.fit_info: dict[str, Any] = {}

    @abc.abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> None:
        """Fit on train; heads that can stop early do so on val."""

    @abc.abstractmethod
    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, num_classes) class scores: probabilities, or decision values (`scores_are`)."""

    def save(self, folder: Path) -> str | None:
        """Write the native model file into `folder`; return its name (None: research-only head)."""
        return None

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> "EmbeddingHead":
        raise InputError(f"{cls.kind} heads are research-only: scikit-learn has no non-pickle format, so only "
                         f"their parameters and figures are saved (head.json in {folder})")


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


@register_fitter
class XGBoostHead(EmbeddingHead):
    kind = "xgboost"
    exportable = True
    model_file = "model.ubj"
    defaults = {"subsample": 0.5, "n_estimators": 500, "min_child_weight": 2, "max_depth": 10, "learning_rate": 0.1,
                "colsample_bytree": 0.6, "early_stopping_rounds": 20, "tree_method": "hist"}
    space = {"subsample": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "n_estimators": [100, 200, 300, 500, 800],
             "min_child_weight": [1, 2, 3, 5, 7], "max_depth": [3, 4, 5, 6, 8, 10],
             "learning_rate": [0.01, 0.05, 0.1, 0.2, 0.3], "colsample_bytree": [0.4, 0.5, 0.6, 0.7, 0.8, 1.0]}

    def _booster_params(self) -> dict[str, Any]:
        p = self.params
        out = {"objective": "multi:softprob", "num_class": self.num_classes, "eval_metric": "mlogloss",
               "eta": p["learning_rate"], "max_depth": p["max_depth"], "min_child_weight": p["min_child_weight"],
               "subsample": p["subsample"], "colsample_bytree": p["colsample_bytree"],
               "tree_method": p["tree_method"], "seed": self.seed}
        if self.n_jobs:
            out["nthread"] = self.n_jobs
        return out

    def fit(self, x, y, x_val, y_val) -> None:
        import xgboost as xgb

        log, total, t0 = self.log, int(self.params["n_estimators"]), time.perf_counter()

        class Progress(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log) -> bool:
                if log and ((epoch + 1) % 25 == 0 or epoch + 1 == total):
                    loss = evals_log["val"]["mlogloss"][-1]
                    log(f"  xgboost round {epoch + 1}/{total}: val mlogloss {loss:.4f} "
                        f"({time.perf_counter() - t0:.0f} s)")
                return False

        dtrain = xgb.DMatrix(x, label=y, nthread=self.n_jobs or -1)
        dval = xgb.DMatrix(x_val, label=y_val, nthread=self.n_jobs or -1)
        rounds = self.params["early_stopping_rounds"]
        booster = xgb.train(self._booster_params(), dtrain, num_boost_round=total, evals=[(dval, "val")],
                            early_stopping_rounds=rounds or None, verbose_eval=False, callbacks=[Progress()])
        best = booster.attr("best_iteration")
        if best is not None:
            # Keep only the trees up to the best round, so the saved booster is plain: every consumer
            # (xgboost, treelite, the compiled C head) predicts with all of its trees.
            booster = booster[: int(best) + 1]
            booster.set_attr(best_iteration=None, best_score=None)
        self.booster = booster
        self.fit_info = {"rounds": booster.num_boosted_rounds(), "early_stopped": best is not None
                         and booster.num_boosted_rounds() < total}

    def scores(self, x) -> np.ndarray:
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(np.asarray(x, np.float32), nthread=self.n_jobs or -1))

    def save(self, folder: Path) -> str:
        self.booster.save_model(folder / self.model_file)
        return self.model_file

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> "XGBoostHead":
        import xgboost as xgb

        head = cls(meta["num_classes"], meta["params"])
        head.booster = xgb.Booster()
        head.booster.load_model(folder / meta["model"])
        return head


@register_fitter
class LogisticHead(EmbeddingHead):
    """Multinomial logistic regression on the embedding: the fair 'linear head' baseline. Fitted
    here; it scores through the runtime's LinearHead, the one that runs it in a bundle."""

    kind = "linear"
    exportable = True
    model_file = "linear.npz"
    defaults = {"C": 1.0, "max_iter": 1000}
    space = {"C": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}
    MISSING_CLASS_BIAS = -30.0  # a class absent from train gets ~zero probability

    def fit(self, x, y, x_val, y_val) -> None:
        from sklearn.linear_model import LogisticRegression

        mean, std = _standardizer(x)
        clf = LogisticRegression(C=self.params["C"], max_iter=self.params["max_iter"])
        clf.fit((x - mean) / std, y)
        coef = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
        icpt = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
        # Fold the standardization into the weights: the saved head works on raw embeddings.
        self.weight = np.zeros((self.num_classes, x.shape[1]), np.float32)
        self.bias = np.full(self.num_classes, self.MISSING_CLASS_BIAS, np.float32)
        self.weight[clf.classes_] = coef / std
        self.bias[clf.classes_] = icpt - (coef * (mean / std)).sum(axis=1)
        self.fit_info = {"iterations": int(np.max(clf.n_iter_))}

    def scores(self, x) -> np.ndarray:
        from ..runtimes.heads import LinearHead

        return LinearHead(self.weight, self.bias)(x)

    def save(self, folder: Path) -> str:
        np.savez(folder / self.model_file, weight=self.weight, bias=self.bias)
        return self.model_file

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> "LogisticHead":
        head = cls(meta["num_classes"], meta["params"])
        with np.load(folder / meta["model"], allow_pickle=False) as z:
            head.weight, head.bias = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
        if head.weight.shape != (meta["num_classes"], meta["num_features"]) or head.bias.shape != (meta["num_classes"],):
            raise InputError(f"{folder}: linear weights {head.weight.shape} / bias {head.bias.shape} do not match "
                             f"{meta['num_classes']} classes x {meta['num_features']} features")
        return head


@register_fitter
class MLPHead(EmbeddingHead):
    """The paper's 'ANN': ReLU MLP on standardized embeddings, epochs stopped early on val accuracy."""

    kind = "mlp"
    model_file = "mlp.npz"
    defaults = {"hidden": [256], "alpha": 1e-4, "learning_rate_init": 1e-3, "batch_size": 256, "max_epochs": 200,
                "patience": 10}
    space = {"hidden": [[128], [256], [512], [256, 128]], "alpha": [1e-5, 1e-4, 1e-3, 1e-2],
             "learning_rate_init": [1e-4, 3e-4, 1e-3, 3e-3]}

    def fit(self, x, y, x_val, y_val) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        p = self.params
        self.mean, self.std = _standardizer(x)
        xs, xv = (x - self.mean) / self.std, (x_val - self.mean) / self.std
        clf = MLPClassifier(hidden_layer_sizes=tuple(p["hidden"]), alpha=p["alpha"],
                            learning_rate_init=p["learning_rate_init"], batch_size=min(p["batch_size"], len(x)),
                            random_state=self.seed)
        best, stale, epoch = -1.0, 0, 0
        classes = np.arange(self.num_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for epoch in range(1, p["max_epochs"] + 1):
                clf.partial_fit(xs, y, classes=classes)
                acc = float((clf.predict(xv) == y_val).mean())
                if acc > best:
                    best, stale, best_epoch = acc, 0, epoch
                    self.layers = [(w.astype(np.float32), b.astype(np.float32))
                                   for w, b in zip(clf.coefs_, clf.intercepts_)]
                else:
                    stale += 1
                    if stale >= p["patience"]:
                        break
        self.fit_info = {"epochs": epoch, "best_epoch": best_epoch}

    def scores(self, x) -> np.ndarray:
        h = (np.asarray(x, np.float32) - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0)
        return softmax(h)

    def save(self, folder: Path) -> str:
        arrays = {"mean": self.mean, "std": self.std}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        np.savez(folder / self.model_file, **arrays)
        return self.model_file

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> "MLPHead":
        head = cls(meta["num_classes"], meta["params"])
        with np.load(folder / meta["model"], allow_pickle=False) as z:
            head.mean, head.std = z["mean"], z["std"]
            n = sum(1 for k in z.files if k.startswith("w"))
            head.layers = [(z[f"w{i}"], z[f"b{i}"]) for i in range(n)]
        return head


@register_fitter
class SVMHead(EmbeddingHead):
    """RBF (or linear) SVM on standardized embeddings; scores are one-vs-rest decision values."""

    kind = "svm"
    scores_are = "decision values"
    defaults = {"C": 1.0, "kernel": "rbf", "gamma": "scale"}
    space = {"C": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0], "kernel": ["rbf"], "gamma": ["scale", 1e-4, 3e-4, 1e-3, 3e-3]}

    def fit(self, x, y, x_val, y_val) -> None:
        from sklearn.svm import SVC

        self.mean, self.std = _standardizer(x)
        self.clf = SVC(C=self.params["C"], kernel=self.params["kernel"], gamma=self.params["gamma"],
                       decision_function_shape="ovr", random_state=self.seed)
        self.clf.fit((x - self.mean) / self.std, y)
        self.fit_info = {"support_vectors": int(self.clf.support_vectors_.shape[0])}

    def scores(self, x) -> np.ndarray:
        d = self.clf.decision_function((np.asarray(x, np.float32) - self.mean) / self.std)
        return _scatter(d, self.clf.classes_, self.num_classes, fill=float(np.min(d)) - 1.0)


@register_fitter
class RandomForestHead(EmbeddingHead):
    kind = "random_forest"
    defaults = {"n_estimators": 300, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt"}
    space = {"n_estimators": [100, 200, 300, 500], "max_depth": [None, 10, 20, 30], "min_samples_leaf": [1, 2, 4],
             "max_features": ["sqrt", "log2", 0.2]}

    def fit(self, x, y, x_val, y_val) -> None:
        from sklearn.ensemble import RandomForestClassifier

        p = self.params
        self.clf = RandomForestClassifier(n_estimators=p["n_estimators"], max_depth=p["max_depth"],
                                          min_samples_leaf=p["min_samples_leaf"], max_features=p["max_features"],
                                          n_jobs=self.n_jobs, random_state=self.seed)
        self.clf.fit(x, y)

    def scores(self, x) -> np.ndarray:
        return _scatter(self.clf.predict_proba(np.asarray(x, np.float32)), self.clf.classes_, self.num_classes, 0.0)


def head_class(kind: str) -> type[EmbeddingHead]:
    if kind not in FITTERS:
        raise InputError(f"unknown head kind {kind!r}; known: {sorted(FITTERS)}")
    return FITTERS[kind]


def sample_params(space: dict[str, list], n: int, seed: int = 0, fixed: dict[str, Any] | None = None
                  ) -> list[dict[str, Any]]:
    """n parameter sets drawn uniformly from `space` (distinct while the space allows), `fixed` pinned."""
    fixed = fixed or {}
    free = {k: v for k, v in space.items() if k not in fixed}
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for _ in range(max(n * 50, 1)):
        if len(out) == n:
            break
        draw = {k: values[int(rng.integers(len(values)))] for k, values in free.items()}
        key = json.dumps(draw, sort_keys=True)
        if key in seen and len(seen) < int(np.prod([len(v) for v in free.values()] or [1])):
            continue
        seen.add(key)
        out.append({**draw, **fixed})
    return out


def random_search(kind: str, num_classes: int, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  *, n_iter: int = 0, params: dict[str, Any] | None = None, n_jobs: int | None = None, seed: int = 0,
                  log: Callable[[str], Any] | None = None) -> tuple[EmbeddingHead, list[dict[str, Any]]]:
    """Fit `n_iter` heads with parameters drawn from the kind's space (`params` pinned) and keep the
    one with the best val accuracy; n_iter=0 fits once with defaults overridden by `params`."""
    cls = head_class(kind)
    if n_iter < 0:
        raise InputError(f"search must be >= 0 fits, got {n_iter}")
    candidates = sample_params(cls.space, n_iter, seed, params) if n_iter else [dict(params or {})]
    best, trials = None, []
    for i, p in enumerate(candidates):
        t0 = time.perf_counter()
        head = cls(num_classes, p, n_jobs=n_jobs, seed=seed, log=log)
        head.fit(x, y, x_val, y_val)
        acc = float((head.scores(x_val).argmax(1) == y_val).mean())
        trial = {"params": head.params, "val_accuracy": acc, "seconds": round(time.perf_counter() - t0, 2),
                 **head.fit_info}
        trials.append(trial)
        if log:
            log(f"{kind} fit {i + 1}/{len(candidates)}: val accuracy {acc * 100:.2f} % "
                f"({trial['seconds']:.1f} s) {json.dumps(head.params)}")
        if best is None or acc > best[0]:
            best = (acc, head)
    return best[1], trials


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "macro_auc")}


def fit_head(checkpoint: str | os.PathLike, kind: str, data: str | os.PathLike, *, out: str | os.PathLike | None = None,
             search: int = 0, params: dict[str, Any] | None = None, limit_per_class: int | None = None,
             test: bool = False, n_jobs: int | None = None, seed: int = 0, batch_size: int = 256,
             threads: int | None = None, cache_dir: str | os.PathLike | None = None, command: str | None = None,
             log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Fit a head of `kind` on a checkpoint's embeddings of `data`'s train split, select on val.

    Extracts (and caches) train/val embeddings, runs the random search (`search` fits; 0 = one fit
    with defaults and `params`), writes `out/head.json` (+ the native model file for exportable
    kinds) and returns head.json's content. limit_per_class limits the train split only; val and
    test are used whole. `test=True` also reports the test split (never used for selection).
    """
    from .embeddings import embed_split

    cls = head_class(kind)
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as e:
            raise InputError(f"params must be a JSON object, got {params!r}: {e}") from e
    if params is not None and not isinstance(params, dict):
        raise InputError(f"params must be a JSON object (a dict), got {type(params).__name__}")
    cls(1, params)  # validates parameter names before the slow part
    t0 = time.perf_counter()
    embed = dict(batch_size=batch_size, threads=threads, cache_dir=cache_dir, log=log)
    train = embed_split(checkpoint, data, "train", limit_per_class=limit_per_class, **embed)
    val = embed_split(checkpoint, data, "val", **embed)
    labels = list(train.classes)
    head, trials = random_search(kind, len(labels), train.features, train.labels, val.features, val.labels,
                                 n_iter=search, params=params, n_jobs=n_jobs, seed=seed, log=log)
    reports = {"val": scores_report(val.labels, head.scores(val.features), labels)}
    if test:
        tst = embed_split(checkpoint, data, "test", **embed)
        reports["test"] = scores_report(tst.labels, head.scores(tst.features), labels)
    folder = Path(out) if out is not None else Path(checkpoint).parent / "heads" / kind
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": kind, "num_features": int(train.features.shape[1]), "num_classes": len(labels), "labels": labels,
        "model": head.save(folder), "exportable": cls.exportable, "scores": cls.scores_are,
        "checkpoint": str(checkpoint), "checkpoint_sha256": train.checkpoint_sha256,
        "params": head.params, "fit": head.fit_info,
        "train": {"n": len(train), "limit_per_class": limit_per_class, "data": str(data)},
        "search": {"fits": search, "selected_on": "val accuracy", "seed": seed, "trials": trials},
        **{split: _summary(r) for split, r in reports.items()},
        "reports": reports, "command": command, "fer_edge": __version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    validate_head_json(meta)
    tmp = folder / "head.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / "head.json")
    if log:
        log(f"{kind} head: val accuracy {meta['val']['accuracy'] * 100:.2f} %, macro F1 "
            f"{meta['val']['macro_f1'] * 100:.2f} %" + (f"; test accuracy {meta['test']['accuracy'] * 100:.2f} %"
                                                        if test else "") + f" -> {folder / 'head.json'}")
    return meta


def validate_head_json(meta: dict[str, Any], folder: Path | None = None) -> None:
    """The head.json contract: required fields, consistent sizes, the model file present."""
    where = f"{folder / 'head.json'}: " if folder else "head.json: "
    missing = [k for k in HEAD_JSON_REQUIRED if k not in meta]
    if missing:
        raise InputError(f"{where}missing fields {missing}; required: {list(HEAD_JSON_REQUIRED)}")
    head_class(meta["kind"])
    if not (isinstance(meta["labels"], list) and len(meta["labels"]) == meta["num_classes"]):
        raise InputError(f"{where}labels {meta['labels']!r} do not match num_classes {meta['num_classes']}")
    if not (isinstance(meta["num_features"], int) and meta["num_features"] > 0):
        raise InputError(f"{where}num_features must be a positive integer, got {meta['num_features']!r}")
    if not {"accuracy", "macro_f1"} <= set(meta["val"] or {}):
        raise InputError(f"{where}val must hold accuracy and macro_f1, got {meta['val']!r}")
    if FITTERS[meta["kind"]].exportable and not meta["model"]:
        raise InputError(f"{where}an exportable {meta['kind']} head needs its model file")
    if folder is not None and meta["model"] and not (folder / meta["model"]).is_file():
        raise InputError(f"{where}model file {meta['model']!r} not found in {folder}")


def load_fitted_head(folder: str | os.PathLike) -> tuple[EmbeddingHead, dict[str, Any]]:
    """(head ready to score embeddings, head.json) from a fitted head's folder; research-only kinds
    raise. (A bundle's heads load through `fer_edge.runtimes.heads.load_head`.)"""
    folder = Path(folder)
    path = folder / "head.json"
    if not path.is_file():
        raise InputError(f"no head.json in {folder}; fit one with `fer-edge fit-head`")
    from ..jsonfile import read_json

    meta = read_json(path, error=InputError)
    validate_head_json(meta, folder)
    return FITTERS[meta["kind"]].load(folder, meta), meta


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
