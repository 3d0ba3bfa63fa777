"""Where an export builds its bundle before moving it into place (and the job each format's converter
gets there: `ConvertJob`), and the clean-up of what an
export killed mid-way (SIGKILL, power loss) left beside `out`: stage folders are named after the
process that made them, so the next export of the same `out` can tell a dead one's from a live one's."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..formats import FORMATS

_LEFTOVER = re.compile(r"(?:(?P<pid>\d+)-[0-9a-f]+\.partial|old-(?P<old>\d+)|(?P<legacy>[0-9a-f]{8})\.partial)")
LEGACY_AGE_S = 3600  # a stage named before pids were part of the name: only an hour-old one is surely dead


def stage_dir(out: Path) -> Path:
    """A new, empty stage folder beside `out` (not mkdtemp: its 0700 mode would become the bundle's)."""
    stage = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    stage.mkdir()
    return stage


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_stale(out: Path) -> list[str]:
    """Remove dead exports' stage folders of `out`; put back a previous bundle that a killed
    `overwrite` had moved aside but not yet replaced. Returns what was done, in words."""
    done: list[str] = []
    prefix = f".{out.name}."
    if not out.parent.is_dir():
        return done
    for p in sorted(out.parent.iterdir()):
        m = _LEFTOVER.fullmatch(p.name[len(prefix):]) if p.name.startswith(prefix) else None
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        pid = m.group("pid") or m.group("old")
        if pid is not None and _alive(int(pid)):
            continue
        if m.group("legacy") and time.time() - p.stat().st_mtime < LEGACY_AGE_S:
            continue
        if m.group("old") and not out.exists():
            os.replace(p, out)
            done.append(f"restored {out} from {p.name}, left by an overwrite that was killed")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}, left by an export that was killed")
    return done


@dataclass
class ConvertJob:
    """What a format's converter (`convert(job)` in the module its FORMATS row names) gets, and what
    it hands back: it builds the artifacts `wanted(format)` asks for from the FP32 ONNX, through
    `job.path`, which records each one."""

    stage: Path  # the bundle being built
    onnx: Path  # the FP32 ONNX every format is converted from (torch2onnx, stamped)
    ship: frozenset[str]  # "format/precision" keys that ship; a format's reference is built regardless
    precisions: tuple[str, ...]  # every precision asked for
    calib: np.ndarray | None  # preprocessed calibration batch for INT8, None when no INT8 is asked for
    max_batch: int  # largest batch of device-built artifacts (TensorRT profiles)
    built: list[tuple[str, str, str]] = field(default_factory=list)  # (format, precision, bundle path)
    records: dict[str, Any] = field(default_factory=dict)  # manifest top-level entries (TensorRT engines)
    calibration: dict[str, str] = field(default_factory=dict)  # format -> how its INT8 was calibrated

    def wanted(self, fmt: str) -> set[str]:
        """The precisions of `fmt` to ship."""
        return {k.split("/")[1] for k in self.ship if k.split("/")[0] == fmt}

    def path(self, fmt: str, precision: str, device: str | None = None) -> Path:
        """Where to write this artifact (recorded as built)."""
        self.built.append((fmt, precision, FORMATS[fmt].path(precision, device)))
        return self.stage / self.built[-1][2]


def move_into_place(stage: Path, out: Path, overwrite: bool) -> None:
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
