"""XGBoost model -> Treelite -> TL2cgen C sources (+ our fer_head wrapper and a CMakeLists.txt)
-> the head library built for this machine. Equivalent to, and checked like:

    treelite.frontend.load_xgboost_model(model_path)            # UBJ or JSON booster
    tl2cgen.generate_c_code(model, out_dir/src, {"parallel_comp": N})
    copy runtimes/native/{fer_head.c, fer_head.h, head.CMakeLists.txt -> CMakeLists.txt}
    cmake -S out_dir/src -B build && cmake --build build  -> out_dir/lib/<platform tag>/libfer_head.so

Then the library's outputs are compared with XGBoost's own predictions (max |diff| <= 1e-5).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, FerEdgeError, install_hint
from ..runtimes.head_build import (
    ABI,
    NATIVE_DIR,
    build_library,
    library_name,
    platform_tag,
)

log = logging.getLogger("fer_edge")

PARITY_ATOL = 1e-5
# Treelite nodes per translation unit. TL2cgen splits trees evenly by count and gcc -O3 time
# grows faster than linearly with a unit's size: a 500-round depth-10 7-class forest took 11
# minutes in 8 units and under 2 in 64 (docs/platform-facts.md section 8).
NODES_PER_UNIT = 2000


def xgboost2c(model_path: str | os.PathLike, out_dir: str | os.PathLike, *, num_features: int, num_classes: int,
              parallel_comp: int = 64, build: bool = True, cache_dir: str | os.PathLike | None = None,
              check_rows: np.ndarray | None = None) -> dict[str, Any]:
    """Write a compiled head into out_dir (src/ and, if build, lib/<tag>/) and return its manifest
    fields, paths relative to out_dir (docs/architecture.md, `heads[name]` for the compiled head).

    num_features / num_classes: what the backbone and labels need; a model that differs is refused.
    parallel_comp: the most translation units the forest is split into (fewer for small forests).
    cache_dir: where builds are cached by the sources' sha256 (default $FER_EDGE_CACHE/heads).
    check_rows: embeddings (e.g. the bundle's golden ones) on which the built library must equal
      XGBoost; random rows (and a row of missing values) are used when None.
    """
    try:
        import tl2cgen
        import treelite
    except ImportError as e:
        raise ExportError(f"the compiled tree head needs treelite and tl2cgen: {install_hint('export')} ({e})") from e
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise ExportError(f"no XGBoost model at {model_path}")
    src = out_dir / "src"
    if src.exists():
        raise ExportError(f"{src} already exists; xgboost2c writes into a fresh folder")

    fmt = "ubjson" if model_path.suffix.lower() in (".ubj", ".ubjson") else "json"
    try:
        model = treelite.frontend.load_xgboost_model(str(model_path), format_choice=fmt)
    except Exception as e:  # treelite raises its own TreeliteError for unreadable models
        raise ExportError(f"treelite cannot read {model_path} as an XGBoost {fmt} model: {e}") from e
    header = _header(model)
    _check_model(header, model_path, num_features, num_classes)

    units = _units(model, parallel_comp)
    src.mkdir(parents=True)
    try:
        # Its embedded Treelite writes the version-skew warning straight to fd 2; TL2cgen's own
        # messages go through print(). Both are kept for the log and the manifest entry.
        with _captured_output() as tl2cgen_log:
            tl2cgen.generate_c_code(model, str(src), params={"parallel_comp": units})
    except Exception as e:
        raise ExportError(f"tl2cgen.generate_c_code failed on {model_path}: {e}") from e
    for line in tl2cgen_log.getvalue().splitlines():
        log.info("tl2cgen: %s", line)
    _check_generated(src)
    shutil.copy2(NATIVE_DIR / "fer_head.c", src / "fer_head.c")
    shutil.copy2(NATIVE_DIR / "fer_head.h", src / "fer_head.h")
    shutil.copy2(NATIVE_DIR / "head.CMakeLists.txt", src / "CMakeLists.txt")

    entry: dict[str, Any] = {
        "kind": "xgboost", "input": "embedding", "num_features": int(num_features), "num_classes": int(num_classes),
        "output": "probabilities", "sources": "src", "libraries": {}, "abi": ABI,
        "treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__,
        "translation_units": units, "trees": int(model.num_tree),
    }
    embedded = re.search(r"Currently running Treelite version (\S+)", tl2cgen_log.getvalue())
    if embedded and embedded.group(1) != treelite.__version__:
        # tl2cgen 1.0.0 embeds its own Treelite (4.1.2): recorded, and the parity check below guards it.
        entry["tl2cgen_treelite"] = embedded.group(1)
    if build:
        try:
            built = build_library(src, cache_dir=cache_dir)
        except FerEdgeError as e:
            raise ExportError(f"building the head library from {src} failed: {e}") from e
        rel = f"lib/{platform_tag()}/{library_name()}"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, out_dir / rel)
        entry["libraries"][platform_tag()] = rel
        entry["parity"] = _parity(model_path, out_dir / rel, num_features, num_classes, check_rows)
    return entry


@contextlib.contextmanager
def _captured_output():
    """Collect what native code writes to fd 2 and Python code prints, into one StringIO."""
    text = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text):
                yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.write(tmp.read().decode("utf-8", "replace"))


def _header(model) -> dict[str, Any]:
    h = model.get_header_accessor()
    return {k: h.get_field(k) for k in ("num_feature", "num_class", "num_target", "postprocessor",
                                        "threshold_type", "leaf_output_type")}


def _check_model(header: dict[str, Any], path: Path, num_features: int, num_classes: int) -> None:
    nf, nc = int(header["num_feature"][0]), int(header["num_class"][0])
    if int(header["num_target"][0]) != 1 or header["postprocessor"] != "softmax":
        raise ExportError(f"{path}: the head must be a single-target softmax classifier (XGBoost multi:softprob); "
                          f"it has {int(header['num_target'][0])} targets and postprocessor {header['postprocessor']!r}")
    if nf != num_features or nc != num_classes:
        raise ExportError(f"{path}: the XGBoost model takes {nf} features and predicts {nc} classes, but the "
                          f"backbone gives {num_features} features and the labels are {num_classes} classes")


def _units(model, parallel_comp: int) -> int:
    """Translation units for TL2cgen: about NODES_PER_UNIT nodes each, at most parallel_comp."""
    if not isinstance(parallel_comp, int) or parallel_comp < 1:
        raise ExportError(f"parallel_comp must be a positive integer; got {parallel_comp!r}")
    nodes = sum(int(model.get_tree_accessor(i).get_field("num_nodes")[0]) for i in range(model.num_tree))
    return max(1, min(parallel_comp, math.ceil(nodes / NODES_PER_UNIT)))


def _check_generated(src: Path) -> None:
    """fer_head.c is written for float32 thresholds and outputs; refuse anything else early."""
    header = (src / "header.h").read_text()
    if not re.search(r"void predict\(union Entry\* data, int pred_margin, float\* result\);", header):
        raise ExportError(f"{src}/header.h: TL2cgen generated a predict() other than the float32 "
                          "'predict(union Entry*, int, float*)' fer_head.c wraps (a different tl2cgen version?)")


def _parity(model_path: Path, library: Path, num_features: int, num_classes: int,
            rows: np.ndarray | None) -> dict[str, Any]:
    """The built library must equal XGBoost's own predictions."""
    import xgboost

    from ..runtimes.heads import TreeLibrary

    if rows is None:
        rng = np.random.default_rng(0)
        rows = rng.normal(0.0, 1.0, (64, num_features)).astype(np.float32)
        rows[0] = np.nan  # every feature missing: the default branches
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != num_features:
        raise ExportError(f"check_rows must have shape (N, {num_features}); got {rows.shape}")
    lib = TreeLibrary(library)
    if (lib.num_features, lib.num_classes) != (num_features, num_classes):
        raise ExportError(f"{library} describes itself as {lib.num_features} features / {lib.num_classes} classes; "
                          f"expected {num_features} / {num_classes}")
    booster = xgboost.Booster(model_file=str(model_path))
    expected = np.asarray(booster.inplace_predict(rows), dtype=np.float32).reshape(len(rows), num_classes)
    diff = float(np.abs(lib.predict(rows) - expected).max())
    if not diff <= PARITY_ATOL:
        raise ExportError(f"compiled head {library} differs from XGBoost {xgboost.__version__} by {diff:.3g} "
                          f"(> {PARITY_ATOL}) on {len(rows)} rows; the treelite/tl2cgen versions may disagree")
    return {"reference": f"xgboost {xgboost.__version__} inplace_predict", "rows": len(rows),
            "max_abs_diff": diff}
