"""Where an export builds its bundle before moving it into place, and the clean-up of what an
export killed mid-way (SIGKILL, power loss) left beside `out`: stage folders are named after the
process that made them, so the next export of the same `out` can tell a dead one's from a live one's."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

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
