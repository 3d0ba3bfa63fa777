"""export_bundle: a checkpoint -> a verified bundle, by the steps of `steps` (build each format's
artifacts, check them on the golden inputs, gate reduced precisions on validation accuracy and
macro-F1, fit the temperature, add the fitted head, write the manifest once, verify)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..errors import ExportError
from ..formats import buildable
from .gate import GateConfig
from .steps import input_spec, producer, resolve_checkpoint  # noqa: F401  (the package's public names)


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
    """Turn a training checkpoint (or a run folder: its best.pt) into a verified bundle folder at `out`.

    The steps of fer_edge.export.steps, in order: torch2onnx (simplified, parity-checked), each
    target format's converter (fer_edge.formats: onnx2int8, onnx2openvino + openvino2int8,
    build_engine), the head's files (xgboost2c); then every artifact, loaded once, on the golden
    inputs and on `val` (the accuracy gate, the temperature, the head's figures); what does not ship
    is removed, the manifest written once and the bundle verified with fer_edge.verify.verify.

    artifacts: ship exactly these "format/precision" keys instead of every target x precision (the
      FP32 references are still built, and every reduced precision gated against them on `val`).
    calib, val, head, ...: see `ExportOptions` (fer_edge.export.steps). An artifact more than
      `max_drop_pp` points of accuracy or `max_f1_drop_pp` of macro-F1 below its reference on val is
      left out (AccuracyDropError only when nothing is left to ship) unless `allow_drop`.
    Everything is built in a hidden folder beside `out` and moved into place only when complete,
    so a failed or interrupted export leaves no half bundle.
    """
    from ..bundle import Bundle
    from .steps import STEPS, ExportOptions, prepare

    if artifacts is not None:
        targets, precisions, ship = _check_artifacts(artifacts)
    else:
        targets, precisions = _check_choice(targets, precisions)
        ship = {f"{t}/{p}" for t in targets for p in precisions if p in buildable()[t]}
    options = ExportOptions(
        name=name, targets=targets, precisions=precisions, ship=frozenset(ship), calib=calib, val=val,
        gate=GateConfig(max_drop_pp, max_f1_drop_pp, allow_drop), head=head, head_path=head_path,
        default_head=default_head, max_batch=max_batch, simplify=simplify, version=version,
        description=description, license=license, commands=commands, evaluation=evaluation,
        trained_on=trained_on, train_minutes=train_minutes, overwrite=overwrite)
    state = prepare(checkpoint, Path(out), options)
    try:
        for step in STEPS:
            step(state)
    except BaseException:
        shutil.rmtree(state.stage, ignore_errors=True)
        raise
    Bundle.open(state.out)
    return state.out


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


