"""The one reader of the JSON files the SDK trusts: manifests, the selection cache, head.json.

A file is refused before parsing when it is larger than its cap (checked by `stat`, so a 100 MB
manifest costs nothing) or nests deeper than MAX_DEPTH (Python's parser would raise
RecursionError, or take seconds, on a hostile file). Errors are the caller's `error` class.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

import numpy as np

from .errors import FerEdgeError

MAX_DEPTH = 64  # our deepest file (a manifest) nests 7 levels
MAX_BYTES = 8 << 20  # a manifest is ~20 KB; head.json with its reports ~1 MB
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def depth(text: bytes) -> int:
    """How deep the brackets of a JSON text nest (strings, where brackets mean nothing, removed)."""
    steps = _OPEN[np.frombuffer(_STRING.sub(b'""', text), np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads(text: bytes | str, *, where: str, error: type[FerEdgeError], max_depth: int = MAX_DEPTH) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    d = depth(raw)
    if d > max_depth:
        raise error(f"{where}: JSON nested {d} levels deep (at most {max_depth}); not a file this SDK wrote")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error(f"{where}: unreadable JSON: {e}") from None


def read_json(path: str | os.PathLike, *, error: type[FerEdgeError], max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON file, or raise `error` saying why not (missing, not a regular file, too large,
    too deep, malformed). FileNotFoundError is left to callers that treat absence as empty."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size:,} bytes, larger than {max_bytes:,}; not a file this SDK wrote")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read: {e}") from e
    if len(raw) > max_bytes:
        raise error(f"{path}: larger than {max_bytes:,} bytes; not a file this SDK wrote")
    return loads(raw, where=str(path), error=error, max_depth=max_depth)
