"""Heads on the embedding, put into a bundle: find the fitted head, check it fits the backbone,
copy or compile it into `head/<kind>/`, record its golden outputs and its validation figures.

A fitted head is a folder with head.json (docs/architecture.md, "Heads on embeddings"), written by
`fer-edge fit-head` into RUN/heads/<kind>/. Only `xgboost` (compiled to C by `xgboost2c`) and
`linear` (an .npz of weight and bias) are exportable.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from ..labels import relabel
from ..probabilities import softmax

EXPORTABLE = ("xgboost", "linear")
HEAD_ATOL = 1e-5  # compiled head vs XGBoost itself, and numpy linear vs itself, on the golden embeddings


@dataclass
class HeadSource:
    kind: str
    folder: Path | None  # None: the linear head taken from the checkpoint's own classifier
    spec: dict[str, Any]  # head.json (or what stands for it)

    def describe(self) -> str:
        return str(self.folder) if self.folder else "the checkpoint's own linear classifier"


def find_head(kind: str, checkpoint: Path, head_path: str | Path | None = None) -> HeadSource:
    """head_path (a folder with head.json) or RUN/heads/<kind>/ beside the checkpoint. A `linear`
    request with no fitted linear head falls back to the checkpoint's classifier -- by design and
    recorded as such, since that is the same function as the in-graph head."""
    if kind not in EXPORTABLE:
        raise ExportError(f"head kind {kind!r} cannot be exported; exportable: {list(EXPORTABLE)} "
                          "(SVM / random-forest / MLP heads are research-only)")
    folder = Path(head_path) if head_path else checkpoint.parent / "heads" / kind
    if (folder / "head.json").is_file():
        from ..jsonfile import read_json

        try:
            spec = read_json(folder / "head.json", error=ExportError)
        except OSError as e:
            raise ExportError(f"{folder / 'head.json'}: unreadable: {e}") from e
        if not isinstance(spec, dict) or spec.get("kind") != kind:
            raise ExportError(f"{folder / 'head.json'} is a {spec.get('kind')!r} head, not {kind!r}")
        return HeadSource(kind, folder, spec)
    if head_path or kind != "linear":
        raise ExportError(f"no fitted {kind} head at {folder} (no head.json); fit one with "
                          f"`fer-edge fit-head {checkpoint} --kind {kind} --data DIR`, or pass --head-path")
    return HeadSource("linear", None, {"kind": "linear", "source": "checkpoint classifier"})


def check_head(src: HeadSource, meta: dict[str, Any], checkpoint: Path | None = None) -> None:
    """Refuse a head that does not take this backbone's embedding or name its classes, or that was
    fitted on another checkpoint's embeddings (head.json's checkpoint_sha256, when recorded)."""
    spec, where = src.spec, src.describe()
    if src.folder is None:
        return
    if checkpoint is not None and spec.get("checkpoint_sha256"):
        from ..bundle import sha256_file

        if sha256_file(checkpoint) != spec["checkpoint_sha256"]:
            raise ExportError(f"{where}: the head was fitted on the embeddings of another checkpoint "
                              f"(sha256 {spec['checkpoint_sha256'][:12]}...), not {checkpoint}; refit it with "
                              f"`fer-edge fit-head {checkpoint} --kind {src.kind}`")
    for key in ("num_features", "num_classes", "model"):
        if key not in spec:
            raise ExportError(f"{where}/head.json lacks {key!r}")
    if int(spec["num_features"]) != int(meta["feature_dim"]):
        raise ExportError(f"{where}: the {src.kind} head takes {spec['num_features']} features but the backbone's "
                          f"embedding ({meta['arch']}) has {meta['feature_dim']}: it was fitted on another network")
    if int(spec["num_classes"]) != len(meta["labels"]):
        raise ExportError(f"{where}: the head has {spec['num_classes']} classes, the backbone {len(meta['labels'])}")
    if "labels" in spec and list(spec["labels"]) != list(meta["labels"]):
        raise ExportError(f"{where}: head labels {spec['labels']} differ from the backbone's {meta['labels']}")


def linear_from_classifier(model) -> tuple[np.ndarray, np.ndarray]:
    import torch

    layers = [m for m in model.classifier.modules() if not isinstance(m, (torch.nn.Sequential, torch.nn.Dropout))]
    if len(layers) != 1 or not isinstance(layers[0], torch.nn.Linear):
        raise ExportError(f"the checkpoint's classifier is {[type(m).__name__ for m in layers]}, not a single Linear: "
                          "fit a linear head with `fer-edge fit-head --kind linear`")
    return (layers[0].weight.detach().numpy().astype(np.float32),
            layers[0].bias.detach().numpy().astype(np.float32))


def add_head(src: HeadSource, stage: Path, model, meta: dict[str, Any], notes: list[str],
             check_rows: np.ndarray | None = None) -> tuple[str, dict]:
    """Write the head's files under stage/head/; returns (name, manifest heads[name] entry).
    check_rows: embeddings (the golden ones) on which the compiled head must equal XGBoost."""
    check_head(src, meta)
    F, C = int(meta["feature_dim"]), len(meta["labels"])
    if src.kind == "linear":
        if src.folder is None:
            weight, bias = linear_from_classifier(model)
        else:
            with np.load(src.folder / src.spec["model"], allow_pickle=False) as z:
                weight, bias = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
        if weight.shape != (C, F) or bias.shape != (C,):
            raise ExportError(f"{src.describe()}: linear weight {weight.shape} / bias {bias.shape}; the backbone needs "
                              f"({C}, {F}) / ({C},)")
        rel = "head/linear.npz"
        (stage / "head").mkdir(parents=True, exist_ok=True)
        np.savez(stage / rel, weight=weight, bias=bias)
        entry = {"kind": "linear", "input": "embedding", "weights": rel, "num_features": F, "num_classes": C,
                 "output": "probabilities", "source": src.describe()}
        return "linear", entry
    from .xgboost2c import xgboost2c

    folder = stage / "head" / "xgboost"
    folder.mkdir(parents=True, exist_ok=True)
    model_file = src.folder / src.spec["model"]
    if not model_file.is_file():
        raise ExportError(f"{src.describe()}: model file {src.spec['model']!r} is missing")
    shutil.copy2(model_file, folder / ("model" + model_file.suffix))
    fields = xgboost2c(model_file, folder, num_features=F, num_classes=C, check_rows=check_rows)
    entry = {**fields, "model": f"head/xgboost/model{model_file.suffix}"}
    for key in ("sources",):
        entry[key] = f"head/xgboost/{fields[key]}"
    entry["libraries"] = {tag: f"head/xgboost/{rel}" for tag, rel in (fields.get("libraries") or {}).items()}
    entry["source"] = src.describe()
    if not entry["libraries"]:
        notes.append("the xgboost head has C sources but no native library for this machine: "
                     "build it with `fer-edge build-head BUNDLE`")
    return "xgboost", entry


def reference_probabilities(stage: Path, entry: dict[str, Any], embedding: np.ndarray) -> np.ndarray:
    """The head's outputs computed by its own library (XGBoost itself; numpy for linear): the golden
    values the compiled or runtime head must reproduce."""
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    if entry["kind"] == "linear":
        with np.load(stage / entry["weights"], allow_pickle=False) as z:
            z_ = embedding.astype(np.float64) @ z["weight"].T.astype(np.float64) + z["bias"]
        return softmax(z_)
    import xgboost

    booster = xgboost.Booster(model_file=str(stage / entry["model"]))
    booster.set_param({"nthread": 1})
    probs = np.asarray(booster.inplace_predict(embedding), dtype=np.float32)
    if probs.shape != (len(embedding), entry["num_classes"]):
        raise ExportError(f"xgboost head predicts shape {probs.shape}; expected ({len(embedding)}, "
                          f"{entry['num_classes']}) probabilities (objective multi:softprob)")
    return probs


def head_val_figures(rec, name: str, val_set) -> dict[str, Any]:
    """Val accuracy / macro-F1 of backbone embedding -> head, through the runtime head (the
    compiled library for xgboost) and the exported FP32 backbone the Recognizer `rec` runs."""
    from ..metrics import classification_report
    from ..runtimes.heads import load_head

    head = load_head(rec.bundle, name)
    probs = []
    for i in range(0, len(val_set), 256):
        out = rec.backbone(rec.preprocess(val_set.images[i : i + 256]))
        probs.append(np.asarray(head(out["embedding"], out["logits"])))
    labels = list(rec.labels)
    y = relabel(val_set.labels, val_set.classes, labels, whose="bundle")
    r = classification_report(y, np.concatenate(probs).argmax(1), labels)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"],
            "through": f"{rec.backend}/fp32 embedding + {name} head"}


def choose_default_head(manifest, figures: dict[str, Any], val_set, key: str | None, rec, force: bool,
                        notes: list[str]) -> dict[str, Any]:
    """Val figures of the bundle's head (through `rec`, the Recognizer of the FP32 artifact `key`,
    or None); it becomes the default head if it beats in_graph on val accuracy, or if `force`."""
    (name, entry), = manifest.heads.items()
    if val_set is None or rec is None:
        why = "no validation data" if val_set is None else "no FP32 artifact to embed with"
        if force:
            manifest.head = {"kind": entry["kind"], "name": name}
            notes.append(f"{name} head made the default by request, unmeasured ({why})")
        return {"chosen": manifest.head.get("name", "in_graph"), "reason": f"{why}: head not evaluated"}
    entry["val"] = head_val_figures(rec, name, val_set)
    ref = figures["val"][key]
    better = entry["val"]["accuracy"] > ref["accuracy"]
    cmp = (f"{name} {entry['val']['accuracy']:.2%} vs in_graph {ref['accuracy']:.2%} val accuracy "
           f"({key} embedding)")
    if better or force:
        manifest.head = {"kind": entry["kind"], "name": name}
        reason = f"{name}, {'it beats in_graph' if better else 'forced by default_head although it does not beat in_graph'}: {cmp}"
    else:
        reason = f"in_graph kept, the {name} head does not beat it: {cmp}"
    if not better and force:
        notes.append(f"default head {name} forced although it does not beat in_graph ({cmp})")
    logging.getLogger("fer_edge").info("export %s: default head: %s", manifest.name, reason)
    return {"chosen": manifest.head.get("name", "in_graph"), "reason": reason,
            "in_graph": {"accuracy": ref["accuracy"], "macro_f1": ref["macro_f1"], "n": ref["n"]}}
