"""Where `backend="fastest"` remembers its choice: `$FER_EDGE_CACHE/selection.json`.

One entry per (bundle manifest sha256, machine fingerprint). The fingerprint holds what changes
which backend is fastest: CPU model and usable cores, the backend versions and devices, and the
request (threads, device, precision). A changed bundle or machine gives a new key, so a stale
timing is never reused; `refresh=True` re-times and overwrites.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
from pathlib import Path
from typing import Any

from .machine import cpu_count, cpu_model

FILE = "selection.json"
MAX_ENTRIES = 64  # oldest dropped first: a cache, not a history
_LOCK = threading.Lock()
log = logging.getLogger("fer_edge")


def cache_path() -> Path:
    from ..bundle import cache_dir

    return cache_dir() / FILE


def manifest_sha256(bundle) -> str:
    from ..bundle import MANIFEST, sha256_file

    return sha256_file(bundle.root / MANIFEST)


def fingerprint(probes: dict[str, Any], *, threads: int | None, device: str | None, precision: str) -> dict[str, Any]:
    return {
        "cpu": cpu_model(), "cores": cpu_count(), "machine": platform.machine(), "system": platform.system(),
        "backends": {n: {"version": p.version, "devices": list(p.devices)} for n, p in sorted(probes.items())
                     if p.usable},
        "threads": threads, "device": device, "precision": precision,
    }


def cache_key(manifest_digest: str, machine: dict[str, Any]) -> str:
    blob = json.dumps({"manifest": manifest_digest, "machine": machine}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


MAX_BYTES = 1 << 20  # 64 entries of ~1 KB


def _read(path: Path) -> dict[str, Any]:
    from ..errors import FerEdgeError
    from ..jsonfile import read_json

    try:
        data = read_json(path, error=FerEdgeError, max_bytes=MAX_BYTES)
    except FileNotFoundError:
        return {}
    except (OSError, FerEdgeError) as e:  # a corrupt (or hostile) cache is rebuilt, never trusted
        log.warning("fer_edge: ignoring unreadable selection cache %s: %s", path, e)
        return {}
    return data.get("entries", {}) if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {}


def lookup(key: str) -> dict[str, Any] | None:
    entry = _read(cache_path()).get(key)
    return entry if isinstance(entry, dict) and {"backend", "precision"} <= set(entry) else None


def store(key: str, entry: dict[str, Any]) -> Path:
    """Add an entry; the file is replaced atomically (a concurrent writer may win, never corrupt it)."""
    path = cache_path()
    with _LOCK:
        entries = _read(path)
        entries.pop(key, None)
        entries[key] = entry
        entries = dict(list(entries.items())[-MAX_ENTRIES:])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps({"schema": 1, "entries": entries}, indent=1))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # left only when the replace failed (selection.json a folder...)
    return path


def store_quietly(key: str, entry: dict[str, Any]) -> Path | None:
    """`store`, but a cache that cannot be written (read-only home, full disk) costs a re-timing next
    time, never the Recognizer: auto writes here on every machine's first use."""
    try:
        return store(key, entry)
    except OSError as e:
        log.warning("fer_edge: cannot write the selection cache %s (%s); the choice will be re-timed next time",
                    cache_path(), e)
        return None
