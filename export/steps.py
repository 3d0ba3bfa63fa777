"""The steps of `export_bundle`, over one explicit state: prepare (check the request, load the
checkpoint and data) -> build (torch2onnx, then each target format's converter) -> load (each
artifact once, by its backend) -> golden (the artifacts on the golden inputs) -> evaluate (val,
typed results) -> gate -> temperature -> head (its val figures; the default) -> prune (what does not
ship) -> finish (card, the manifest written once, verify, move into place).

Each step reads what earlier steps put into `ExportState` and adds its own part; nothing else is
shared between them."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AccuracyDropError, ExportError
from ..formats import FORMATS
from ..manifest import Artifact, Manifest
from ..parity import check
from .build_engine import ENGINES_KEY
from .checkpoint import load_checkpoint
from .gate import GateConfig, ValResult, evaluate_artifacts, gate, skipped
from .golden import read_golden, select_golden
from .head_packaging import HEAD_ATOL, add_head, find_head, reference_probabilities
from .sampling import calibration_batch, load_faces
from .stages import ConvertJob, clean_stale, move_into_place, stage_dir
from .torch2onnx import OUTPUTS, torch2onnx


@dataclass(frozen=True)
class ExportOptions:
    """What `export_bundle` is asked to make (its keyword arguments, checked by `prepare`)."""

    name: str
    targets: tuple[str, ...]  # formats to build (each at the precisions its row's exporter_builds allows)
    precisions: tuple[str, ...]
    ship: frozenset[str]  # "format/precision" keys that ship (`artifacts=`, or every target x precision)
    calib: Any = None  # INT8 calibration crops (FaceSet, dataset path, uint8 crops or a float32 batch); default: val
    val: Any = None  # labelled validation data: evaluation, the accuracy gate and the temperature; None skips them
    gate: GateConfig = GateConfig()
    head: str | None = None  # 'xgboost' or 'linear': the fitted head beside the checkpoint (or in head_path)
    head_path: str | os.PathLike | None = None
    default_head: bool = False  # make the head the default even when it does not beat in_graph on val
    max_batch: int = 32  # the largest batch of the TensorRT optimization profile
    simplify: bool = True
    version: str = "1"
    description: str = ""
    license: str = ""
    commands: dict[str, str] | None = None  # e.g. {"train": ..., "export": ...}: manifest and card
    evaluation: dict[str, Any] | None = None  # the caller's figures, merged into manifest.evaluation
    trained_on: str | None = None  # hardware that trained the checkpoint (manifest.training, card)
    train_minutes: float | None = None
    overwrite: bool = False


@dataclass
class ExportState:
    options: ExportOptions
    checkpoint: Path
    out: Path
    model: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    spec: Any = None  # InputSpec
    head_src: Any = None  # head_packaging.HeadSource
    val_set: Any = None
    val_desc: str | None = None
    calib_batch: np.ndarray | None = None
    calib_info: dict[str, Any] | None = None
    stage: Path | None = None
    notes: list[str] = field(default_factory=list)  # warnings recorded in the manifest and the card
    manifest: Manifest | None = None  # in memory until `finish` writes it, once
    job: ConvertJob | None = None
    golden: dict[str, Any] = field(default_factory=dict)
    recognizers: dict[str, Any] = field(default_factory=dict)  # artifact key -> its Recognizer, loaded once
    results: dict[str, ValResult] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # manifest.evaluation, ours
    temperature: dict[str, Any] | None = None


def prepare(checkpoint: Path, out: Path, options: ExportOptions) -> ExportState:
    """Refuse a bad request before any work; load the checkpoint, the head, val and calibration."""
    if not options.name or not isinstance(options.name, str):
        raise ExportError("name must be a non-empty string")
    for note in clean_stale(out):
        warnings.warn(f"export: {note}", stacklevel=3)
    if out.exists() and not options.overwrite:
        raise ExportError(f"{out} already exists; remove it, choose another path or pass overwrite=True")
    if "tensorrt" in options.targets:
        from .onnx2tensorrt import tensorrt_or_raise

        tensorrt_or_raise("export --targets tensorrt")  # before any work: fail fast and clearly
    state = ExportState(options, resolve_checkpoint(checkpoint), out)
    state.model, state.meta = load_checkpoint(state.checkpoint)
    if options.head is not None:
        from .head_packaging import check_head

        state.head_src = find_head(options.head, state.checkpoint, options.head_path)
        check_head(state.head_src, state.meta, state.checkpoint)  # a head that does not fit is refused first
    elif options.head_path is not None:
        raise ExportError("head_path needs head= ('xgboost' or 'linear')")
    state.spec = input_spec(state.meta)
    state.val_set, state.val_desc = (None, None) if options.val is None else load_faces(options.val)
    if "int8" in options.precisions:
        state.calib_batch, state.calib_info = calibration_batch(options.calib, state.val_set, state.val_desc,
                                                                state.spec, state.notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    state.stage = stage_dir(out)
    return state


def build(state: ExportState) -> None:
    """The manifest's identity, torch2onnx stamped with it, each target format's converter (its
    FORMATS row names it) in table order, the golden tensors and the head's files."""
    from .._version import __version__
    from ..manifest import identity_digest

    o, meta, spec = state.options, state.meta, state.spec
    state.manifest = m = Manifest(
        name=o.name, labels=list(meta["labels"]), input=spec,
        model={"arch": meta["arch"], "params": int(meta["params"]), "feature_dim": int(meta["feature_dim"]),
               "outputs": {o: o for o in OUTPUTS}},
        artifacts=[], files={}, version=str(o.version), created=now(), description=o.description,
        license=o.license, producer=producer(__version__))
    stamp = {"name": o.name, "version": str(o.version), "arch": meta["arch"], "labels": list(meta["labels"]),
             "feature_dim": str(meta["feature_dim"]), "input": spec.to_dict(), "manifest_sha256": identity_digest(m)}
    state.job = job = convert(state.model, state.stage, o, spec, stamp, state.calib_batch)
    if state.calib_info is not None:
        state.calib_info.update(job.calibration)
    m.producer["onnx_simplified"] = _simplified(state.stage)
    m.artifacts = [Artifact(fmt, prec, path) for fmt, prec, path in job.built]
    state.golden = select_golden(state.stage, state.model, spec, state.val_set, state.calib_batch)
    if state.head_src is not None:
        embedding = np.load(state.stage / state.golden["files"]["embedding"])
        name, entry = add_head(state.head_src, state.stage, state.model, meta, state.notes, check_rows=embedding)
        rel = f"golden/head.{name}.npy"
        np.save(state.stage / rel, reference_probabilities(state.stage, entry, embedding), allow_pickle=False)
        state.golden = {**state.golden, "heads": {name: rel}, "head_atol": {name: HEAD_ATOL}}
        m.heads = {name: entry}


def convert(model, stage: Path, o: ExportOptions, spec, stamp: dict[str, Any], calib) -> ConvertJob:
    """torch2onnx, then each target format's converter; the job lists every artifact built,
    shipped or not, and the converters' records."""
    onnx = stage / FORMATS["onnx"].path("fp32")
    torch2onnx(model, onnx, size=spec.size, metadata=stamp, simplify=o.simplify)
    job = ConvertJob(stage, onnx, o.ship, o.precisions, calib, o.max_batch)
    for key, fmt in FORMATS.items():
        if key in o.targets:
            import_module(f"{__package__}.{fmt.converter}").convert(job)
    order = list(FORMATS)
    job.built.sort(key=lambda b: order.index(b[0]))  # stable: each format's own order stays
    if not any(b[:2] == ("onnx", "fp32") for b in job.built):  # the source no format claimed
        remove_artifact(stage, FORMATS["onnx"].path("fp32"), FORMATS["onnx"])
    return job


def load(state: ExportState) -> None:
    """One Recognizer per artifact, on the stage in memory (nothing written yet): the golden check,
    the evaluation, the temperature fit and the head's figures all run through it."""
    from ..bundle import Bundle, file_table
    from ..recognizer import Recognizer

    state.manifest.files = file_table(state.stage)  # what the head loader checks its files against
    bundle = Bundle(state.stage, state.manifest, state.stage)
    for art in state.manifest.artifacts:
        state.recognizers[art.key()] = Recognizer(bundle=bundle, backend=FORMATS[art.format].backend,
                                                  precision=art.precision, calibrated=False)


def check_golden(state: ExportState) -> None:
    """Every artifact on the golden inputs: FP32/FP16 within the golden tolerance of torch
    (ParityError otherwise); INT8 measured here (and gated on val), its thresholds recorded."""
    tensors = read_golden(state.stage, state.golden)
    tolerance = state.golden["tolerance"]
    measured = {}
    for key, rec in state.recognizers.items():
        tol = tolerance.get(key.split("/")[1], {})
        measured[key] = check(key, tensors, rec.backbone(tensors["input"]), tol if "atol" in tol else {})
    state.golden = {**state.golden, "measured": measured, "thresholds": thresholds(measured, len(tensors["input"]))}


def thresholds(measured: dict[str, dict[str, float]], n: int) -> dict[str, dict[str, float]]:
    """Per artifact other than its format's reference, what `verify` must see again on the golden
    inputs: the agreement measured at export less two inputs of slack, the embedding cosine less 0.02
    (other CPUs run other INT8 kernels; the accuracy gate on val is what guards accuracy)."""
    out = {}
    for key, m in measured.items():
        if key != FORMATS[key.split("/")[0]].reference_key():
            out[key] = {"min_top1_agreement": round(max(0.0, m["top1_agreement"] - 2 / n), 4),
                        "min_embedding_cosine": round(max(0.0, m["min_embedding_cosine"] - 0.02), 4)}
    return out


def evaluate_and_gate(state: ExportState) -> None:
    """Val figures of every artifact and the gate's verdict (or the record that there was no val)."""
    if state.val_set is None:
        state.figures = skipped(state.manifest, state.options.gate, state.notes)
        return
    state.results = evaluate_artifacts(state.recognizers, state.val_set)
    state.figures = gate(state.results, state.options.gate, state.notes)


def fit_temperature(state: ExportState) -> None:
    from .temperature import temperature_entry

    if state.val_set is not None:
        state.temperature = temperature_entry(state.results, state.val_desc, state.recognizers, state.val_set,
                                              state.notes)


def choose_head(state: ExportState) -> None:
    """Val figures of the shipped head (through the FP32 backbone); the default if it beats in_graph."""
    if state.head_src is None:
        return
    from .head_packaging import choose_default_head

    key = next((a.key() for a in state.manifest.artifacts if a.precision == "fp32"), None)
    state.figures = {**state.figures, "default_head": choose_default_head(
        state.manifest, state.figures, state.val_set, key, state.recognizers.get(key), state.options.default_head,
        state.notes)}


def prune(state: ExportState) -> None:
    """Drop what does not ship: FP32 sources built only to derive another precision, and what failed
    the gate (its val row says so)."""
    m, ship = state.manifest, state.options.ship
    left_out = (state.figures.get("accuracy_gate") or {}).get("left_out") or {}
    engines = dict(state.job.records.get(ENGINES_KEY, {}))
    val = {k: dict(v) for k, v in (state.figures.get("val") or {}).items()}
    measured, limits = dict(state.golden.get("measured", {})), dict(state.golden.get("thresholds", {}))
    for fmt, prec, path in state.job.built:
        key = f"{fmt}/{prec}"
        if key not in ship or key in left_out:
            remove_artifact(state.stage, path, FORMATS[fmt])
            if key in val:
                val[key]["shipped"] = False
                if key in left_out:
                    val[key]["left_out"] = left_out[key]
            measured.pop(key, None)
            limits.pop(key, None)
            engines.pop(path, None)
    m.artifacts = [a for a in m.artifacts if a.key() in ship and a.key() not in left_out]
    if not m.artifacts:
        raise AccuracyDropError("every artifact to ship failed the accuracy gate: " + "; ".join(left_out.values())
                                + ". Improve calibration (more or more varied crops), ship FP32 too, raise "
                                "max_drop_pp / max_f1_drop_pp, or pass allow_drop=True")
    if engines:
        m.extra[ENGINES_KEY] = engines
    state.golden = {**state.golden, "measured": measured, "thresholds": limits}
    if "val" in state.figures:
        state.figures = {**state.figures, "val": val}


def finish(state: ExportState) -> None:
    """The manifest's records, the card, the manifest written (once), verify, and into place."""
    from ..bundle import Bundle, write_manifest
    from ..verify import verify
    from .card import model_card

    o, m, meta = state.options, state.manifest, state.meta
    m.golden, m.temperature = state.golden, state.temperature
    m.evaluation = merge_figures(o.evaluation or {}, state.figures)
    m.extra.update({
        "commands": {**({"train": meta["command"]} if meta.get("command") else {}), **(o.commands or {})},
        "export": {"targets": list(o.targets), "precisions": list(o.precisions), "artifacts": sorted(o.ship),
                   "calibration": state.calib_info, "validation": state.val_desc, "checkpoint": str(state.checkpoint),
                   "warnings": state.notes,
                   # what a format's converter records of how it built its artifacts (ncnn: storage)
                   **{k: v for k, v in state.job.records.items() if k in FORMATS},
                   "accuracy_gate": {"max_drop_pp": o.gate.max_drop_pp, "max_f1_drop_pp": o.gate.max_f1_drop_pp,
                                     "allow_drop": o.gate.allow_drop}},
        "training": {**{k: meta[k] for k in ("epoch", "config") if k in meta},
                     **({"val": {k: meta["val"].get(k) for k in ("accuracy", "macro_f1", "n")}}
                        if isinstance(meta.get("val"), dict) else {}),
                     **({"hardware": o.trained_on} if o.trained_on else {}),
                     **({"minutes": float(o.train_minutes)} if o.train_minutes is not None else {})},
    })
    for note in state.notes:
        warnings.warn(f"export {o.name}: {note}", stacklevel=3)
    (state.stage / "MODEL_CARD.md").write_text(model_card(m, meta))
    write_manifest(state.stage, m)
    report = verify(Bundle.open(state.stage))
    if not report.ok:
        raise ExportError("the finished bundle fails verification: "
                          + "; ".join(f"{c.name}: {c.detail}" for c in report.failed))
    move_into_place(state.stage, state.out, o.overwrite)


def _simplified(stage: Path) -> str:
    from .torch2onnx import metadata_of

    path = stage / FORMATS["onnx"].path("fp32")
    return metadata_of(path).get("simplified", "unknown") if path.is_file() else "n/a"


def remove_artifact(stage: Path, rel: str, fmt) -> None:
    main = stage / rel
    stem = main.name[: -len(fmt.suffix)]
    for p in [main, *(main.with_name(stem + s) for s in fmt.companions if s.startswith("."))]:
        p.unlink(missing_ok=True)
    for d in (main.parent, main.parent.parent):  # drop emptied backbone/<fmt>/ and backbone/
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()



def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its best.pt)."""
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise ExportError(f"{path} is a folder without best.pt; pass a checkpoint file or a training run folder")
        return path / "best.pt"
    return path


def input_spec(meta: dict[str, Any]):
    """The bundle's InputSpec from the checkpoint's `input` entry (parsed by train.checkpoint, its owner)."""
    from ..train.checkpoint import input_spec as checkpoint_input_spec

    return checkpoint_input_spec(meta, error=ExportError)


def merge_figures(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Caller's figures plus ours; for a key both have as dicts, merge one level (ours win)."""
    merged = dict(theirs)
    for k, v in ours.items():
        merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def producer(fer_edge_version: str) -> dict[str, Any]:
    import platform
    from importlib import metadata

    versions: dict[str, Any] = {"fer_edge": fer_edge_version, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "numpy", "xgboost-cpu", "treelite",
                 "tl2cgen", "pnnx", "ncnn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


STEPS = (build, load, check_golden, evaluate_and_gate, fit_temperature, choose_head, prune, finish)
