"""export_bundle: a checkpoint -> a verified bundle. It only sequences the converters, gates
each reduced-precision artifact on validation accuracy and macro-F1 (a failed one is left out),
fits the temperature, adds the fitted head, and writes the manifest."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from importlib import import_module
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import AccuracyDropError, ExportError
from ..formats import FORMATS
from ..formats import buildable
from ..manifest import Artifact, Manifest
from ..parity import check
from .build_engine import ENGINES_KEY
from .card import model_card
from .checkpoint import load_checkpoint
from .gate import GateConfig, evaluate_artifacts, gate, skipped
from .golden import read_golden, select_golden
from .head_packaging import HEAD_ATOL, add_head, find_head, head_val_figures, reference_probabilities
from .stages import ConvertJob, clean_stale, stage_dir
from .sampling import calibration_batch, load_faces
from .torch2onnx import INPUT, OUTPUTS, torch2onnx


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its best.pt)."""
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise ExportError(f"{path} is a folder without best.pt; pass a checkpoint file or a training run folder")
        return path / "best.pt"
    return path


def export_bundle(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str,
    targets: Iterable[str] = ("onnx", "openvino"),
    precisions: Iterable[str] = ("fp32", "int8"),
    artifacts: Iterable[str] | None = None,
    calib: Any = None,
    val: Any = None,
    max_drop_pp: float = 0.5,
    max_f1_drop_pp: float = 1.0,
    allow_drop: bool = False,
    head: str | None = None,
    head_path: str | os.PathLike | None = None,
    default_head: bool = False,
    max_batch: int = 32,
    simplify: bool = True,
    version: str = "1",
    description: str = "",
    license: str = "",
    commands: dict[str, str] | None = None,
    evaluation: dict[str, Any] | None = None,
    trained_on: str | None = None,
    train_minutes: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Turn a training checkpoint (or a run folder: its best.pt) into a bundle folder at `out`.

    Runs, in order: torch2onnx (simplified, parity-checked) -> onnx2int8 (ORT QDQ) ->
    onnx2openvino (fp32, and fp16 weights if asked) -> openvino2int8 (NNCF) -> onnx2tensorrt
    (engines for this GPU, if 'tensorrt' is a target) -> xgboost2c (if head='xgboost'), then
    checks every artifact on golden inputs, gates reduced precisions on `val`, and verifies the
    finished bundle with fer_edge.verify.verify.

    artifacts: ship exactly these "format/precision" keys (e.g. ("onnx/int8", "openvino/int8") or
      ("onnx/int8", "openvino/fp16")) instead of every target x precision; overrides targets and
      precisions. The FP32 sources are still built and every reduced precision is gated against
      them on `val`, shipped or not.
    calib: calibration crops for INT8 -- a FaceSet, a dataset path (its val split), uint8 crops
      (N, H, W) or an already preprocessed float32 (N, 1, H, W) batch; default: the `val` data.
      Up to CALIB_SIZE crops are drawn from it at random (seed 0).
    val: labelled validation data (a FaceSet or dataset path, its val split). Every artifact is
      evaluated on it; an INT8 (or FP16) artifact more than `max_drop_pp` points of accuracy or
      `max_f1_drop_pp` points of macro-F1 below its FP32 source is left out of the bundle (the
      manifest's evaluation.accuracy_gate.left_out and the card say which and why) unless
      `allow_drop`; AccuracyDropError only when nothing is left to ship. A temperature is fitted
      on the FP32 val outputs (manifest `temperature`). None skips both, with a warning recorded.
    head: 'xgboost' or 'linear': the fitted head in RUN/heads/<kind>/ beside the checkpoint (or in
      `head_path`); 'linear' with no fitted head takes the checkpoint's own classifier. A head whose
      feature count or labels differ from the backbone's is refused. It becomes the default head
      only if it beats in_graph on val accuracy, or if `default_head`.
    max_batch: the largest batch of the TensorRT optimization profile (1..max_batch).
    commands: e.g. {"train": ..., "export": ...}, recorded in the manifest and the model card.
    trained_on, train_minutes: the hardware that trained the checkpoint and its wall time, recorded
      in manifest.training and the card (the checkpoint does not record them).
    evaluation: the caller's figures (e.g. the test split), merged into manifest.evaluation.

    Everything is built in a hidden folder beside `out` and moved into place only when complete,
    so a failed or interrupted export leaves no half bundle.
    """
    from .._version import __version__
    from ..bundle import Bundle, write_manifest
    from ..verify import identity_digest, verify

    out = Path(out)
    if artifacts is not None:
        targets, precisions, ship = _check_artifacts(artifacts)
    else:
        targets, precisions = _check_choice(targets, precisions)
        ship = {f"{t}/{p}" for t in targets for p in precisions if p in buildable()[t]}
    if not name or not isinstance(name, str):
        raise ExportError("name must be a non-empty string")
    for note in clean_stale(out):
        warnings.warn(f"export: {note}", stacklevel=2)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; remove it, choose another path or pass overwrite=True")
    if "tensorrt" in targets:
        from .onnx2tensorrt import tensorrt_or_raise

        tensorrt_or_raise("export --targets tensorrt")  # before any work: fail fast and clearly
    checkpoint = resolve_checkpoint(checkpoint)
    gate_config = GateConfig(max_drop_pp, max_f1_drop_pp, allow_drop)
    model, meta = load_checkpoint(checkpoint)
    head_src = None
    if head is not None:
        from .head_packaging import check_head

        head_src = find_head(head, checkpoint, head_path)
        check_head(head_src, meta, checkpoint)  # a head that does not fit the backbone is refused before any work
    elif head_path is not None:
        raise ExportError("head_path needs head= ('xgboost' or 'linear')")
    spec = input_spec(meta)
    notes: list[str] = []
    val_set, val_desc = (None, None) if val is None else load_faces(val)
    calib_batch, calib_info = None, None
    if "int8" in precisions:
        calib_batch, calib_info = calibration_batch(calib, val_set, val_desc, spec, notes)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = stage_dir(out)
    try:
        manifest = Manifest(
            name=name, labels=list(meta["labels"]), input=spec,
            model={"arch": meta["arch"], "params": int(meta["params"]), "feature_dim": int(meta["feature_dim"]),
                   "outputs": {o: o for o in OUTPUTS}},
            artifacts=[], files={}, version=str(version), created=_now(), description=description,
            license=license, producer=producer(__version__),
        )
        digest = identity_digest(manifest)
        metadata = {"name": name, "version": str(version), "arch": meta["arch"], "labels": list(meta["labels"]),
                    "feature_dim": str(meta["feature_dim"]), "input": spec.to_dict(), "manifest_sha256": digest}
        job = _build(model, stage, targets, precisions, spec, metadata, calib_batch, max_batch, simplify, ship)
        built, engines = job.built, job.records.get(ENGINES_KEY, {})
        if calib_info is not None:
            calib_info.update(job.calibration)
        manifest.producer["onnx_simplified"] = _simplified(stage)
        golden = select_golden(stage, model, spec, val_set, calib_batch)
        manifest.artifacts = [Artifact(fmt, prec, path) for fmt, prec, path in built]
        if engines:
            manifest.extra[ENGINES_KEY] = engines
        if head_src is not None:
            embedding = np.load(stage / golden["files"]["embedding"])
            head_name, entry = add_head(head_src, stage, model, meta, notes, check_rows=embedding)
            rel = f"golden/head.{head_name}.npy"
            np.save(stage / rel, reference_probabilities(stage, entry, embedding), allow_pickle=False)
            golden.update(heads={head_name: rel}, head_atol={head_name: HEAD_ATOL})
            manifest.heads = {head_name: entry}
        manifest.golden = golden
        write_manifest(stage, manifest)
        bundle = Bundle.open(stage)
        golden["measured"] = _check_golden(bundle, stage)
        golden["thresholds"] = _thresholds(golden["measured"], len(np.load(stage / golden["files"]["input"])))
        temperature = None
        if val_set is None:
            figures = skipped(bundle, gate_config, notes)
        else:
            reports = evaluate_artifacts(bundle, val_set)
            figures = gate(reports, gate_config, notes)
            temperature = _fit_temperature(reports, val_desc, bundle, val_set, notes)
        if head_src is not None:
            figures["default_head"] = _choose_head(bundle, manifest, figures, val_set, default_head, notes)

        # FP32 sources built only to derive another precision are not shipped, nor what failed the gate.
        left_out = (figures.get("accuracy_gate") or {}).get("left_out") or {}
        for fmt, prec, path in built:
            key = f"{fmt}/{prec}"
            if key not in ship or key in left_out:
                _remove_artifact(stage, path, FORMATS[fmt])
                row = figures.get("val", {}).get(key, {})
                row["shipped"] = False
                if key in left_out:
                    row["left_out"] = left_out[key]
                golden["measured"].pop(key, None)
                golden["thresholds"].pop(key, None)
                engines.pop(path, None)
        manifest.artifacts = [a for a in manifest.artifacts if a.key() in ship and a.key() not in left_out]
        if not manifest.artifacts:
            raise AccuracyDropError("every artifact to ship failed the accuracy gate: "
                                    + "; ".join(left_out.values()) + ". Improve calibration (more or more "
                                    "varied crops), ship FP32 too, raise max_drop_pp / max_f1_drop_pp, or pass "
                                    "allow_drop=True")
        if engines:
            manifest.extra[ENGINES_KEY] = engines
        else:
            manifest.extra.pop(ENGINES_KEY, None)
        manifest.evaluation = _merge(evaluation or {}, figures)
        manifest.extra.update({
            "commands": {**({"train": meta["command"]} if meta.get("command") else {}), **(commands or {})},
            "export": {"targets": list(targets), "precisions": list(precisions), "artifacts": sorted(ship),
                       "calibration": calib_info,
                       "validation": val_desc, "checkpoint": str(checkpoint), "warnings": notes,
                       "accuracy_gate": {"max_drop_pp": max_drop_pp, "max_f1_drop_pp": max_f1_drop_pp,
                                         "allow_drop": allow_drop}},
            "training": {**{k: meta[k] for k in ("epoch", "config") if k in meta},
                         **({"val": {k: meta["val"].get(k) for k in ("accuracy", "macro_f1", "n")}}
                            if isinstance(meta.get("val"), dict) else {}),
                         **({"hardware": trained_on} if trained_on else {}),
                         **({"minutes": float(train_minutes)} if train_minutes is not None else {})},
        })
        if temperature is not None:
            manifest.temperature = temperature
        for note in notes:
            warnings.warn(f"export {name}: {note}", stacklevel=2)
        (stage / "MODEL_CARD.md").write_text(model_card(manifest, meta))
        write_manifest(stage, manifest)
        report = verify(Bundle.open(stage))
        if not report.ok:
            raise ExportError("the finished bundle fails verification: "
                              + "; ".join(f"{c.name}: {c.detail}" for c in report.failed))
        _move_into_place(stage, out, overwrite)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    Bundle.open(out)
    return out


def _simplified(stage: Path) -> str:
    from .torch2onnx import metadata_of

    path = stage / FORMATS["onnx"].path("fp32")
    return metadata_of(path).get("simplified", "unknown") if path.is_file() else "n/a"


def _thresholds(measured: dict[str, dict[str, float]], n: int) -> dict[str, dict[str, float]]:
    """Per reduced-precision artifact, what `verify` must see again on the golden inputs: the
    agreement measured at export less two inputs of slack, the embedding cosine less 0.02 (other
    CPUs run other INT8 kernels; the accuracy gate on val is what guards accuracy)."""
    out = {}
    for key, m in measured.items():
        fmt, precision = key.split("/")
        if precision != FORMATS[fmt].reference:
            out[key] = {"min_top1_agreement": round(max(0.0, m["top1_agreement"] - 2 / n), 4),
                        "min_embedding_cosine": round(max(0.0, m["min_embedding_cosine"] - 0.02), 4)}
    return out


def _choose_head(bundle, manifest: Manifest, figures: dict[str, Any], val_set, force: bool,
                 notes: list[str]) -> dict[str, Any]:
    """Val figures of the head (through the exported FP32 backbone); default head if it beats in_graph."""
    (name, entry), = manifest.heads.items()
    fp32 = next((a for a in manifest.artifacts if a.precision == "fp32"), None)
    if val_set is None or fp32 is None:
        why = "no validation data" if val_set is None else "no FP32 artifact to embed with"
        if force:
            manifest.head = {"kind": entry["kind"], "name": name}
            notes.append(f"{name} head made the default by request, unmeasured ({why})")
        return {"chosen": manifest.head.get("name", "in_graph"), "reason": f"{why}: head not evaluated"}
    entry["val"] = head_val_figures(bundle, name, val_set, FORMATS[fp32.format].backend)
    ref = figures["val"][fp32.key()]
    better = entry["val"]["accuracy"] > ref["accuracy"]
    cmp = (f"{name} {entry['val']['accuracy']:.2%} vs in_graph {ref['accuracy']:.2%} val accuracy "
           f"({fp32.key()} embedding)")
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


def _check_artifacts(artifacts: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...], set[str]]:
    """("onnx/int8", "openvino/fp16") -> (targets, precisions, the keys to ship)."""
    keys = (artifacts,) if isinstance(artifacts, str) else tuple(artifacts)
    keys = tuple(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if not keys:
        raise ExportError("artifacts must name at least one 'format/precision', e.g. onnx/int8")
    for k in keys:
        fmt, _, prec = k.partition("/")
        if fmt not in buildable() or prec not in buildable()[fmt]:
            raise ExportError(f"cannot build artifact {k!r}; buildable: "
                              + ", ".join(f"{t}/{p}" for t, ps in buildable().items() for p in ps))
    targets = tuple(dict.fromkeys(k.split("/")[0] for k in keys))
    precisions = tuple(dict.fromkeys(k.split("/")[1] for k in keys))
    return targets, precisions, set(keys)


def _fit_temperature(reports: dict[str, dict[str, Any]], val_desc: str | None, bundle=None,
                     val_set=None, notes: list[str] | None = None) -> dict[str, Any] | None:
    """Temperature scaling of the in-graph probabilities, fitted on the FP32 reference's val outputs:
    one T for plain inputs (`value`) and, given the bundle and val set, one per test-time
    augmentation mode (`by_tta`): averaging views softens the probabilities, so the plain T
    over-softens them (tiny's ten-crop ECE on test went 0.041 -> 0.043 with it, base's 0.036 -> 0.046)."""
    from ..calibration import T_SEARCH, apply_temperature, expected_calibration_error, fit_temperature, nll
    from ..recognizer import Recognizer
    from ..tta import TTA_MODES

    key = next((k for k in (f"{f.key}/{f.reference}" for f in FORMATS.values()) if k in reports), None)
    if key is None:
        return None

    def fitted(probs: np.ndarray, y: np.ndarray, mode: str = "none") -> dict[str, Any]:
        t = fit_temperature(probs, y)
        if notes is not None and not T_SEARCH[0] * 1.01 < t < T_SEARCH[1] * 0.99:
            notes.append(f"temperature (tta {mode}) fitted at the search bound, T = {t:g}: the val NLL has no "
                         "interior optimum (val too small or too easy?); the calibration is not meaningful")
        after = apply_temperature(probs, t)
        return {"value": t, "val_nll": {"before": round(nll(probs, y), 5), "after": round(nll(after, y), 5)},
                "val_ece": {"before": round(expected_calibration_error(probs, y), 5),
                            "after": round(expected_calibration_error(after, y), 5)}}

    y = reports[key]["_labels"]
    entry = {**fitted(reports[key]["_probabilities"], y), "head": "in_graph", "fitted_on": f"{val_desc}, {key} outputs",
             "method": "golden-section search of log T minimising the val negative log-likelihood"}
    if bundle is not None and val_set is not None:
        fmt, precision = key.split("/")
        entry["by_tta"] = {}
        for mode in TTA_MODES[1:]:
            rec = Recognizer(bundle=bundle, backend=FORMATS[fmt].backend, precision=precision, tta=mode,
                             calibrated=False)
            entry["by_tta"][mode] = fitted(rec.predict_proba(val_set.images), y, mode)
    return entry


def _check_choice(targets: Iterable[str], precisions: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Each target is built at the precisions it supports (formats.FORMATS[...].exporter_builds);
    every precision must be built by at least one target (so `--targets onnx,openvino --precision
    fp32,fp16` is fine: FP16 is an OpenVINO artifact)."""
    targets = (targets,) if isinstance(targets, str) else targets
    precisions = (precisions,) if isinstance(precisions, str) else precisions
    targets, precisions = tuple(dict.fromkeys(targets)), tuple(dict.fromkeys(precisions))
    if not targets or not precisions:
        raise ExportError("targets and precisions must each name at least one entry")
    for t in targets:
        if t not in buildable():
            raise ExportError(f"export_bundle cannot build target {t!r}; it builds {sorted(buildable())}")
    for p in precisions:
        if not any(p in buildable()[t] for t in targets):
            raise ExportError(f"no target among {list(targets)} is built at precision {p!r}: "
                              + ", ".join(f"{t} builds {buildable()[t]}" for t in targets))
    return targets, precisions


def input_spec(meta: dict[str, Any]):
    """The bundle's InputSpec from the checkpoint's `input` entry (parsed by train.checkpoint, its owner)."""
    from ..train.checkpoint import input_spec as checkpoint_input_spec

    return checkpoint_input_spec(meta, error=ExportError)


def _build(model, stage: Path, targets, precisions, spec, metadata, calib, max_batch: int,
           simplify: bool, ship: set[str]) -> ConvertJob:
    """torch2onnx, then each target format's converter (its FORMATS row names it), in table order.
    The job lists every artifact built, shipped or not, and the converters' records."""
    onnx = stage / FORMATS["onnx"].path("fp32")
    torch2onnx(model, onnx, size=spec.size, metadata=metadata, simplify=simplify)
    job = ConvertJob(stage, onnx, frozenset(ship), tuple(precisions), calib, max_batch)
    for key, fmt in FORMATS.items():
        if key in targets:
            import_module(f"{__package__}.{fmt.converter}").convert(job)
    order = list(FORMATS)
    job.built.sort(key=lambda b: order.index(b[0]))  # stable: each format's own order stays
    if not any(b[:2] == ("onnx", "fp32") for b in job.built):  # the source no format claimed
        _remove_artifact(stage, FORMATS["onnx"].path("fp32"), FORMATS["onnx"])
    return job


def _remove_artifact(stage: Path, rel: str, fmt) -> None:
    main = stage / rel
    stem = main.name[: -len(fmt.suffix)]
    for p in [main, *(main.with_name(stem + s) for s in fmt.companions if s.startswith("."))]:
        p.unlink(missing_ok=True)
    for d in (main.parent, main.parent.parent):  # drop emptied backbone/<fmt>/ and backbone/
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _check_golden(bundle, stage: Path) -> dict[str, dict[str, float]]:
    """Run every artifact on the golden inputs; FP32/FP16 must match torch within the golden
    tolerance (ParityError otherwise); INT8 is measured here and gated on val."""
    from ..runtimes import select_backend

    golden = read_golden(stage, bundle.manifest.golden)
    tolerance = bundle.manifest.golden["tolerance"]
    measured = {}
    for art in bundle.manifest.artifacts:
        sel = select_backend(bundle, FORMATS[art.format].backend, precision=art.precision)
        tol = tolerance.get(art.precision, {})
        measured[art.key()] = check(art.key(), golden, sel.backend.run(golden["input"]),
                                    tol if "atol" in tol else {})
    return measured


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
    for dist in ("torch", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "numpy", "xgboost-cpu", "treelite",
                 "tl2cgen"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
