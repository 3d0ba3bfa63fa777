"""Export: a checkpoint -> a verified bundle. One converter per step (source2target functions);
`export_bundle` only sequences them, gates INT8 on validation accuracy and writes the manifest.

Heavy libraries (torch, onnx, onnxruntime, openvino, nncf) are imported inside the converters,
so importing this package stays cheap.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import AccuracyDropError, ExportError
from ..formats import FORMATS
from ..manifest import Artifact, Manifest
from .checkpoint import load_checkpoint
from .golden import compare, read_golden, write_golden
from .onnx2int8 import onnx2int8
from .onnx2openvino import onnx2openvino
from .openvino2int8 import openvino2int8
from .record import record_evaluation
from .torch2onnx import INPUT, OUTPUTS, torch2onnx

__all__ = ["export_bundle", "record_evaluation", "load_checkpoint", "torch2onnx", "onnx2int8", "onnx2openvino", "openvino2int8",
           "write_golden", "read_golden", "CALIB_SIZE"]

CALIB_SIZE = 300  # calibration crops; fewer is allowed but recorded as a warning
# What each target can be built at here (TensorRT engines are built on the device, not by this exporter).
BUILDABLE = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "fp16", "int8")}


def export_bundle(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str,
    targets: Iterable[str] = ("onnx", "openvino"),
    precisions: Iterable[str] = ("fp32", "int8"),
    calib: Any = None,
    val: Any = None,
    max_drop_pp: float = 0.5,
    allow_drop: bool = False,
    version: str = "1",
    description: str = "",
    license: str = "",
    commands: dict[str, str] | None = None,
    evaluation: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Turn a training checkpoint into a bundle folder at `out` and return its path.

    calib: calibration crops for INT8 -- a FaceSet, a dataset path (its val split), uint8 crops
      (N, H, W) or an already preprocessed float32 (N, 1, H, W) batch; default: the `val` data.
      Up to CALIB_SIZE crops are drawn from it at random (seed 0).
    val: labelled validation data (a FaceSet or dataset path, its val split). Every artifact is
      evaluated on it; an INT8 (or FP16) artifact more than `max_drop_pp` percentage points
      below its FP32 source raises AccuracyDropError unless `allow_drop`. None skips the gate,
      with a warning recorded in the manifest.
    commands: e.g. {"train": ..., "export": ...}, recorded in the manifest and the model card.
    evaluation: the caller's figures (e.g. the test split), merged into manifest.evaluation.

    Everything is built in a hidden folder beside `out` and moved into place only when complete,
    so a failed or interrupted export leaves no half bundle.
    """
    from .._version import __version__
    from ..bundle import Bundle, write_manifest

    out = Path(out)
    targets, precisions = _check_choice(targets, precisions)
    if not name or not isinstance(name, str):
        raise ExportError("name must be a non-empty string")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; remove it, choose another path or pass overwrite=True")
    model, meta = load_checkpoint(checkpoint)
    spec = input_spec(meta)
    notes: list[str] = []
    val_set, val_desc = (None, None) if val is None else _load_faces(val)
    calib_batch, calib_info = None, None
    if "int8" in precisions:
        calib_batch, calib_info = _calibration(calib, val_set, val_desc, spec, notes)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would become the bundle's; mkdir honours the umask.
    stage = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    stage.mkdir()
    try:
        metadata = {"name": name, "version": version, "arch": meta["arch"], "labels": list(meta["labels"]),
                    "feature_dim": str(meta["feature_dim"]), "input": spec.to_dict()}
        built = _build(model, stage, targets, precisions, spec, metadata, calib_batch)
        golden = _golden(stage, model, spec, val_set, calib_batch)
        manifest = Manifest(
            name=name, labels=list(meta["labels"]), input=spec,
            model={"arch": meta["arch"], "params": int(meta["params"]), "feature_dim": int(meta["feature_dim"]),
                   "outputs": {o: o for o in OUTPUTS}},
            artifacts=[Artifact(fmt, prec, FORMATS[fmt].path(prec)) for fmt, prec in built],
            files={}, version=str(version), created=_now(), description=description, license=license,
            producer=producer(__version__), golden=golden,
        )
        write_manifest(stage, manifest)
        bundle = Bundle.open(stage)
        golden["measured"] = _check_golden(bundle, stage)
        figures = _gate(bundle, val_set, max_drop_pp, allow_drop, notes)

        # FP32 sources built only to derive another precision are not shipped.
        for fmt, prec in built:
            if prec not in precisions:
                _remove_artifact(stage, FORMATS[fmt], prec)
                figures.get("val", {}).get(f"{fmt}/{prec}", {})["shipped"] = False
                golden["measured"].pop(f"{fmt}/{prec}", None)
        manifest.artifacts = [a for a in manifest.artifacts if a.precision in precisions]
        manifest.evaluation = _merge(evaluation or {}, figures)
        manifest.extra = {
            "commands": {**({"train": meta["command"]} if meta.get("command") else {}), **(commands or {})},
            "export": {"targets": list(targets), "precisions": list(precisions), "calibration": calib_info,
                       "validation": val_desc, "warnings": notes},
            "training": {**{k: meta[k] for k in ("epoch", "config") if k in meta},
                         **({"val": {k: meta["val"].get(k) for k in ("accuracy", "macro_f1", "n")}}
                            if isinstance(meta.get("val"), dict) else {})},
        }
        for note in notes:
            warnings.warn(f"export {name}: {note}", stacklevel=2)
        (stage / "MODEL_CARD.md").write_text(model_card(manifest, meta))
        write_manifest(stage, manifest)
        Bundle.open(stage)
        _move_into_place(stage, out, overwrite)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    Bundle.open(out)
    return out


def _check_choice(targets: Iterable[str], precisions: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    targets = (targets,) if isinstance(targets, str) else targets
    precisions = (precisions,) if isinstance(precisions, str) else precisions
    targets, precisions = tuple(dict.fromkeys(targets)), tuple(dict.fromkeys(precisions))
    if not targets or not precisions:
        raise ExportError("targets and precisions must each name at least one entry")
    for t in targets:
        if t not in BUILDABLE:
            why = "its artifacts are built on the target device" if t in FORMATS else f"known: {sorted(FORMATS)}"
            raise ExportError(f"export_bundle cannot build target {t!r} ({why}); it builds {sorted(BUILDABLE)}")
        for p in precisions:
            if p not in BUILDABLE[t]:
                raise ExportError(f"target {t!r} cannot be built at precision {p!r}; it builds {BUILDABLE[t]}")
    return targets, precisions


def input_spec(meta: dict[str, Any]):
    """The bundle's InputSpec from the checkpoint's `input` entry (size, scale, mean, std)."""
    from ..preprocess import InputSpec

    inp = meta.get("input") or {}

    def floats(v: Any) -> tuple[float, ...]:
        return tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))

    try:
        size = inp.get("size", (48, 48))
        size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        return InputSpec(size=size, scale=float(inp.get("scale", 1 / 255)), mean=floats(inp.get("mean", 0.0)),
                         std=floats(inp.get("std", 1.0)), input_name=INPUT)
    except Exception as e:
        raise ExportError(f"checkpoint input entry {inp!r} is not a valid input spec: {e}") from e


def _load_faces(source: Any):
    """(FaceSet, description) from a FaceSet or a dataset path (its val split)."""
    from ..data import FaceSet, load_dataset

    if isinstance(source, FaceSet):
        return source, f"in-memory FaceSet ({len(source)} images)"
    faces = load_dataset(source, "val")
    return faces, f"{source} (val split, {len(faces)} images)"


def _calibration(calib: Any, val_set, val_desc, spec, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from ..data import FaceSet
    from ..preprocess import preprocess

    if calib is None:
        if val_set is None:
            raise ExportError("INT8 needs calibration crops: pass calib= (or val=, whose images are used)")
        images, desc = val_set.images, val_desc
    elif isinstance(calib, np.ndarray):
        images, desc = calib, f"array {calib.shape} {calib.dtype}"
    elif isinstance(calib, FaceSet):
        images, desc = calib.images, f"in-memory FaceSet ({len(calib)} images)"
    else:
        faces, desc = _load_faces(calib)
        images = faces.images
    n = len(images)
    # Random, not the first N: dataset folders are sorted by class, so the first 300 are one class.
    index = np.sort(np.random.default_rng(0).permutation(n)[:CALIB_SIZE])
    chosen = images[index]
    if n < CALIB_SIZE:
        notes.append(f"INT8 calibrated on only {n} crops (at least {CALIB_SIZE} recommended)")
    if chosen.dtype == np.float32 and chosen.ndim == 4:
        if tuple(chosen.shape[1:]) != (1, *spec.size):
            raise ExportError(f"preprocessed calibration batch has shape {chosen.shape}; the model takes "
                              f"(N, 1, {spec.size[0]}, {spec.size[1]})")
        batch = np.ascontiguousarray(chosen)
    else:
        batch = preprocess(chosen, spec)
    return batch, {"source": desc, "n": int(len(batch)), "selection": "random, seed 0"}


def _build(model, stage: Path, targets, precisions, spec, metadata, calib) -> list[tuple[str, str]]:
    """Run the converters; returns (format, precision) of every artifact built, shipped or not."""
    path = lambda fmt, prec: stage / FORMATS[fmt].path(prec)  # noqa: E731
    built = [("onnx", "fp32")]
    torch2onnx(model, path("onnx", "fp32"), size=spec.size, metadata=metadata)
    if "onnx" in targets and "int8" in precisions:
        onnx2int8(path("onnx", "fp32"), path("onnx", "int8"), calib)
        built.append(("onnx", "int8"))
    if "openvino" in targets:
        onnx2openvino(path("onnx", "fp32"), path("openvino", "fp32"))
        built.append(("openvino", "fp32"))
        if "fp16" in precisions:
            onnx2openvino(path("onnx", "fp32"), path("openvino", "fp16"), fp16=True)
            built.append(("openvino", "fp16"))
        if "int8" in precisions:
            openvino2int8(path("openvino", "fp32"), path("openvino", "int8"), calib)
            built.append(("openvino", "int8"))
    if "onnx" not in targets:
        built.remove(("onnx", "fp32"))
        _remove_artifact(stage, FORMATS["onnx"], "fp32")
    return built


def _remove_artifact(stage: Path, fmt, precision: str) -> None:
    main = stage / fmt.path(precision)
    for p in [main, *(main.with_suffix(s) for s in fmt.companions)]:
        p.unlink(missing_ok=True)
    for d in (main.parent, main.parent.parent):  # drop emptied backbone/<fmt>/ and backbone/
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _golden(stage: Path, model, spec, val_set, calib) -> dict[str, Any]:
    """Golden inputs: real crops when there are any (noise makes near-constant logits)."""
    from ..preprocess import preprocess

    rng = np.random.default_rng(0)
    if val_set is not None:
        crops = val_set.images[np.sort(rng.permutation(len(val_set))[: 8])]
        return write_golden(stage, model, preprocess(crops, spec), crops=crops)
    if calib is not None:
        return write_golden(stage, model, calib[:8])
    return write_golden(stage, model, rng.standard_normal((8, 1, *spec.size)).astype(np.float32))


def _check_golden(bundle, stage: Path) -> dict[str, dict[str, float]]:
    """Run every artifact on the golden inputs; FP32/FP16 must match torch within tolerance."""
    from ..runtimes import select_backend

    golden = read_golden(stage, bundle.manifest.golden)
    tolerance = bundle.manifest.golden["tolerance"]
    measured = {}
    for art in bundle.manifest.artifacts:
        sel = select_backend(bundle, FORMATS[art.format].backend, precision=art.precision)
        out = sel.backend.run(golden["input"])
        m = measured[art.key()] = compare(golden, out)
        tol = tolerance.get(art.precision, {})
        if "atol" in tol:
            ref = max(float(np.abs(golden[k]).max()) for k in OUTPUTS)
            if not m["max_abs_diff"] <= tol["atol"] + tol["rtol"] * ref:
                raise ExportError(f"{art.key()} differs from torch by {m['max_abs_diff']:.3g} on the golden "
                                  f"inputs (tolerance atol {tol['atol']:g} + rtol {tol['rtol']:g} x {ref:.3g})")
    return measured


def _gate(bundle, val_set, max_drop_pp: float, allow_drop: bool, notes: list[str]) -> dict[str, Any]:
    from ..evaluate import agreement, evaluate
    from ..recognizer import Recognizer

    gate: dict[str, Any] = {"max_drop_pp": max_drop_pp, "drops_pp": {}}
    if val_set is None:
        reduced = sorted({a.precision for a in bundle.manifest.artifacts} - {"fp32"})
        notes.append("no validation data given: no accuracy figures"
                     + (f"; accuracy gate SKIPPED, {'/'.join(reduced).upper()} accuracy unverified" if reduced else ""))
        return {"accuracy_gate": {**gate, "status": "skipped"}}
    reports = {}
    for art in bundle.manifest.artifacts:
        rec = Recognizer(bundle=bundle, backend=FORMATS[art.format].backend, precision=art.precision)
        reports[art.key()] = evaluate(rec, val_set, "val")
    figures: dict[str, Any] = {
        "val": {k: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]} for k, r in reports.items()},
        "int8_agreement_val": {},
    }
    failures = []
    for art in bundle.manifest.artifacts:
        ref = reports.get(f"{art.format}/fp32")
        if art.precision == "fp32" or ref is None:
            continue
        got = reports[art.key()]
        if art.precision == "int8":
            figures["int8_agreement_val"][art.format] = agreement(ref, got)
        drop = (ref["accuracy"] - got["accuracy"]) * 100
        gate["drops_pp"][art.key()] = round(drop, 3)
        if drop > max_drop_pp:
            failures.append(f"{art.key()} val accuracy {got['accuracy']:.2%} is {drop:.2f} pp below "
                            f"{art.format}/fp32 {ref['accuracy']:.2%} (allowed: {max_drop_pp} pp)")
    if failures and not allow_drop:
        raise AccuracyDropError("; ".join(failures) + ". Improve calibration, or pass allow_drop=True to ship it")
    if failures:
        notes.extend(f"ACCEPTED ACCURACY DROP (allow_drop): {f}" for f in failures)
    gate["status"] = "accepted_drop" if failures else "passed"
    gate["failures"] = failures
    figures["accuracy_gate"] = gate
    return figures


def _merge(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Caller's figures plus ours; for a key both have as dicts, merge one level (ours win)."""
    merged = dict(theirs)
    for k, v in ours.items():
        merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _move_into_place(stage: Path, out: Path, overwrite: bool) -> None:
    old = None
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out} appeared during the export; not replacing it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise ExportError(f"cannot move the finished bundle to {out}: {e}") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def producer(fer_edge_version: str) -> dict[str, Any]:
    import platform
    from importlib import metadata

    versions: dict[str, Any] = {"fer_edge": fer_edge_version, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def model_card(m: Manifest, meta: dict[str, Any]) -> str:
    """A short MODEL_CARD.md: what the model is, its data, figures, how it was made, its limits."""
    export = m.extra.get("export", {})
    cfg = meta.get("config") or {}
    lines = [f"# {m.name} (version {m.version})", ""]
    if m.description:
        lines += [m.description, ""]
    lines += [
        "## Model",
        f"- Architecture `{m.model['arch']}`, {m.model['params']:,} parameters, "
        f"embedding of {m.model['feature_dim']} values.",
        f"- Input: {m.input.size[0]}x{m.input.size[1]} grayscale face crop, scaled by {m.input.scale:.6g}, "
        f"mean {list(m.input.mean)}, std {list(m.input.std)}.",
        f"- Classes ({len(m.labels)}): {', '.join(m.labels)}.",
        f"- Artifacts: {', '.join(a.key() for a in m.artifacts)}.",
        "",
        "## Data",
        f"- Training data: {cfg.get('data', 'not recorded in the checkpoint')}"
        + (f" (checkpoint of epoch {meta['epoch']})." if "epoch" in meta else "."),
        f"- Validation (accuracy gate): {export.get('validation') or 'none given'}.",
        f"- INT8 calibration: {(export.get('calibration') or {}).get('source', 'not needed')}"
        + (f", {export['calibration']['n']} crops." if export.get("calibration") else "."),
        "",
        "## Figures",
    ]
    trained_val = (m.extra.get("training") or {}).get("val")
    if trained_val and trained_val.get("accuracy") is not None:
        lines += [f"Training run's val accuracy (torch, at that epoch): {trained_val['accuracy']:.2%}.", ""]
    val = m.evaluation.get("val") or {}
    if val:
        lines += ["| artifact | val accuracy | val macro-F1 | n |", "|---|---|---|---|"]
        lines += [f"| {k}{'' if v.get('shipped', True) else ' (not shipped)'} | {v['accuracy']:.2%} | "
                  f"{v['macro_f1']:.3f} | {v['n']} |" for k, v in val.items()]
        agree = m.evaluation.get("int8_agreement_val") or {}
        if agree:
            lines.append("")
            lines.append("INT8 top-1 agreement with FP32 on val: "
                         + ", ".join(f"{k} {v:.2%}" for k, v in agree.items()) + ".")
    else:
        lines.append("No validation figures.")
    other = {k: v for k, v in m.evaluation.items() if k not in ("val", "int8_agreement_val", "accuracy_gate")}
    for key, rec in sorted(other.items()):
        if isinstance(rec, dict) and isinstance(rec.get("runs"), dict):
            lines += ["", f"### {key}", "", f"Measured by `{rec.get('command', '?')}` on {rec.get('date', '?')}.", "",
                      "| artifact | accuracy | macro-F1 | n | per-class recall |", "|---|---|---|---|---|"]
            for k, v in rec["runs"].items():
                recall = ", ".join(f"{c} {r:.0%}" for c, r in v.get("per_class_recall", {}).items())
                lines.append(f"| {k} | {v['accuracy']:.2%} | {v['macro_f1']:.2%} | {v['n']} | {recall} |")
            if rec.get("agreement"):
                lines += ["", "Top-1 agreement: " + ", ".join(f"{k} {v:.2%}" for k, v in rec["agreement"].items()) + "."]
            other = {k: v for k, v in other.items() if k != key}
    if other:
        lines += ["", "Other figures supplied at export: " + ", ".join(sorted(other)) + " (see manifest.json)."]
    gate = m.evaluation.get("accuracy_gate", {})
    lines += ["", f"Accuracy gate (INT8 at most {gate.get('max_drop_pp')} pp below FP32): "
                  f"**{gate.get('status', 'n/a')}**."]
    for note in export.get("warnings", []):
        lines.append(f"- **WARNING:** {note}")
    commands = m.extra.get("commands") or {}
    if commands:
        lines += ["", "## How it was made", ""]
        lines += [f"- {k}: `{v}`" for k, v in commands.items()]
    lines += [
        "",
        "## Limits",
        "- Recognises posed/acted expression categories on frontal, cropped faces like its training data; "
        "it does not read emotions, and accuracy drops on profile views, occlusion, low light and "
        "demographics under-represented in the data.",
        "- Not for decisions about people (hiring, policing, health, education).",
        "- INT8 figures hold for crops resembling the calibration data.",
        "",
        f"License: {m.license or 'not specified'}.",
        "",
    ]
    return "\n".join(lines)
