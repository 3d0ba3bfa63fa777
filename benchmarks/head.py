"""Latency of the XGBoost head: compiled (TL2cgen C via our ctypes head) vs XGBoost vs Treelite GTIL.

    python benchmarks/head.py [--rounds 200] [--depth 6] [--features 512] [--json benchmarks/head.json]

Fits a 7-class `multi:softprob` XGBoost model on synthetic 512-d embeddings (non-negative, like
the backbone's pooled ReLU features; labels from a random linear rule so trees grow to full
depth), converts it with `fer_edge.export.xgboost2c` (timing code generation + CMake build), then
times, on one thread, per call at each batch size (median and p95 over --runs calls after --warmup,
each call on the next of the 64 held-out rows, so no call repeats the previous one's input):
  compiled      `CompiledTreeHead.__call__` (input checks + ctypes + fer_head_predict)
  compiled-raw  `TreeLibrary.predict` (ctypes + fer_head_predict only)
  xgboost       `Booster.inplace_predict` (nthread 1)
  gtil          `treelite.gtil.predict` (nthread 1)
and checks that all four agree (max |diff|). Rows of one run are comparable; the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _time(fn, batches: list[np.ndarray], runs: int, warmup: int) -> dict[str, float]:
    """Wall and CPU milliseconds per call. Each call gets the next batch in turn: one row repeated
    would train the CPU's branch predictor on its path through the trees and flatter every
    implementation. Everything timed runs on the calling thread (nthread 1), so its thread CPU time
    is its compute time even when a loaded machine preempts it (which inflates wall time)."""
    for i in range(warmup):
        fn(batches[i % len(batches)])
    wall, cpu = [], []
    for i in range(runs):
        x = batches[i % len(batches)]
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(x)
        c1, t1 = time.thread_time(), time.perf_counter()
        wall.append((t1 - t0) * 1000)
        cpu.append((c1 - c0) * 1000)
    return {"ms_per_call_p50": float(np.median(wall)), "ms_per_call_p95": float(np.percentile(wall, 95)),
            "cpu_ms_per_call_p50": float(np.median(cpu))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--train-rows", type=int, default=4000)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--train-threads", type=int, default=2)
    ap.add_argument("--work", help="folder for the model and the compiled head (default: a temporary one); "
                    "a model already there with the same settings is reused")
    ap.add_argument("--json", help="write the figures as JSON")
    args = ap.parse_args()
    load_start = os.getloadavg()

    import treelite
    import xgboost

    from fer_edge.export.xgboost2c import xgboost2c
    from fer_edge.runtimes.heads import CompiledTreeHead

    work = Path(args.work or tempfile.mkdtemp(prefix="fer-head-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = args.train_rows + 64
    x = np.maximum(rng.normal(0.3, 0.5, (n, args.features)), 0).astype(np.float32)
    y = (x @ rng.normal(0, 1, (args.features, args.classes)) + rng.normal(0, 2, (n, args.classes))).argmax(1)
    x_train, y_train, x_test = x[: args.train_rows], y[: args.train_rows], x[args.train_rows:]

    params = {"objective": "multi:softprob", "num_class": args.classes, "max_depth": args.depth, "eta": 0.1,
              "tree_method": "hist", "nthread": args.train_threads}
    recipe = {**params, "rounds": args.rounds, "features": args.features, "train_rows": args.train_rows}
    model_path, recipe_path = work / "model.ubj", work / "model.json"
    if model_path.is_file() and recipe_path.is_file() and json.loads(recipe_path.read_text())["recipe"] == recipe:
        # Same model as a previous run in this --work folder: re-time without re-training.
        bst = xgboost.Booster(model_file=str(model_path))
        train_s = json.loads(recipe_path.read_text())["train_seconds"]
    else:
        t0 = time.perf_counter()
        bst = xgboost.train(params, xgboost.DMatrix(x_train, label=y_train), num_boost_round=args.rounds)
        train_s = time.perf_counter() - t0
        bst.save_model(model_path)
        recipe_path.write_text(json.dumps({"recipe": recipe, "train_seconds": train_s}))

    out = work / "head"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    entry = xgboost2c(model_path, out, num_features=args.features, num_classes=args.classes,
                      cache_dir=work / "cache", check_rows=x_test)
    convert_s = time.perf_counter() - t0
    lib_path = out / next(iter(entry["libraries"].values()))
    build_info = json.loads(next((work / "cache").glob("*/build.json")).read_text())
    head = CompiledTreeHead(lib_path, num_features=args.features, num_classes=args.classes)
    tl_model = treelite.frontend.load_xgboost_model(str(model_path), format_choice="ubjson")
    bst.set_param({"nthread": 1})

    fns = {
        "compiled": head,
        "compiled-raw": head.lib.predict,
        "xgboost": lambda a: bst.inplace_predict(a),
        "gtil": lambda a: treelite.gtil.predict(tl_model, a, nthread=1),
    }
    ref = bst.inplace_predict(x_test)
    agree = {k: float(np.abs(np.asarray(f(x_test)).reshape(ref.shape) - ref).max()) for k, f in fns.items()}

    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        batches = [np.ascontiguousarray(x_test[i:i + batch]) for i in range(0, len(x_test) - batch + 1, batch)]
        runs = max(20, args.runs if batch == 1 else args.runs // 4)
        for name, fn in fns.items():
            rows.append({"impl": name, "batch": batch, "threads": 1, **_time(fn, batches, runs, args.warmup)})

    print(f"head: {args.rounds} rounds x depth {args.depth} x {args.classes} classes on {args.features} features "
          f"= {entry['trees']} trees; xgboost training {train_s:.1f} s; xgboost2c {convert_s:.1f} s "
          f"(CMake build {build_info['seconds']:.1f} s, {entry['translation_units']} translation units, "
          f"library {lib_path.stat().st_size / 2**20:.2f} MiB)")
    print(f"max |diff| vs xgboost on {len(x_test)} rows: " + ", ".join(f"{k} {v:.2g}" for k, v in agree.items()))
    print(f"{'impl':14s} {'batch':>5s} {'wall ms/call p50':>16s} {'p95':>8s} {'CPU ms/call p50':>15s} "
          f"{'CPU ms/row':>10s} {'vs xgboost (CPU)':>16s}")
    for r in rows:
        xgb = next(q for q in rows if q["impl"] == "xgboost" and q["batch"] == r["batch"])
        r["speedup_vs_xgboost"] = xgb["cpu_ms_per_call_p50"] / r["cpu_ms_per_call_p50"]
        print(f"{r['impl']:14s} {r['batch']:5d} {r['ms_per_call_p50']:16.4f} {r['ms_per_call_p95']:8.4f} "
              f"{r['cpu_ms_per_call_p50']:15.4f} {r['cpu_ms_per_call_p50'] / r['batch']:10.4f} "
              f"{r['speedup_vs_xgboost']:15.1f}x")
    if args.json:
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "loadavg_start": load_start},
            "versions": {"xgboost": xgboost.__version__, "treelite": treelite.__version__,
                         "tl2cgen": entry["tl2cgen"], "tl2cgen_treelite": entry.get("tl2cgen_treelite")},
            "model": {"rounds": args.rounds, "depth": args.depth, "classes": args.classes,
                      "features": args.features, "trees": entry["trees"], "train_rows": args.train_rows,
                      "train_seconds": train_s},
            "compile": {"xgboost2c_seconds": convert_s, "cmake_build_seconds": build_info["seconds"],
                        "translation_units": entry["translation_units"],
                        "library_bytes": lib_path.stat().st_size, "compiler": build_info["compiler"]},
            "max_abs_diff_vs_xgboost": agree,
            "rows": rows,
            "command": "python benchmarks/head.py " + " ".join(sys.argv[1:]),
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
