"""The export stage measured: conversion times, artifact sizes, INT8 drop on val, FP32 vs INT8
backbone latency per backend, and the compiled tree head vs xgboost vs Treelite GTIL.

    python benchmarks/export.py [--checkpoint runs/tiny-cpu/best.pt] [--data DIR] [--head-path DIR]
                                [--work DIR] [--json out.json]

1. `export_bundle` end to end (ONNX + OpenVINO, FP32 + INT8, the XGBoost head), timed; the INT8
   accuracy and macro-F1 drops come from its gate on the val split (all of it).
2. Each converter again on its own, timed, into --work/steps (xgboost2c with an empty build cache,
   so the compile is counted).
3. Backbone latency: `backend.run` on one preprocessed crop (batch 1), 1 thread, median of --runs.
4. Head latency at batch 1 and 32, 1 thread: the compiled head (`load_head`, ctypes), xgboost
   `inplace_predict`, `treelite.gtil.predict`; CPU time of the calling thread (all three run on
   it), which is robust to the shared machine's preemption, and wall time.
Without --head-path a head is fitted here on the checkpoint's train embeddings (--head-rows rows,
--head-rounds x depth --head-depth, eta 0.1, hist): the settings are printed and stored in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def size(path: Path, companions=()) -> int:
    return path.stat().st_size + sum(path.with_suffix(s).stat().st_size for s in companions)


def latency(fn, inputs: list, runs: int, warmup: int = 20) -> dict[str, float]:
    """Median wall and thread-CPU milliseconds per call; call i gets inputs[i % len]."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    wall, cpu = [], []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        w0, c0 = time.perf_counter(), time.thread_time()
        fn(x)
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return {"wall_ms_p50": float(np.median(wall)), "cpu_ms_p50": float(np.median(cpu))}


def fit_head(checkpoint: Path, data: str, folder: Path, rows: int, rounds: int, depth: int) -> dict:
    """A multi:softprob head on real train embeddings, written as `fer-edge fit-head` writes it."""
    import torch
    import xgboost

    from fer_edge.bundle import sha256_file
    from fer_edge.data import load_dataset
    from fer_edge.export import input_spec, load_checkpoint
    from fer_edge.preprocess import preprocess

    model, meta = load_checkpoint(checkpoint)
    faces = load_dataset(data, "train", limit_per_class=max(1, rows // len(meta["labels"])))
    x = preprocess(faces.images, input_spec(meta))
    with torch.no_grad():
        emb = np.concatenate([model.forward_features(torch.from_numpy(x[i:i + 256])).numpy()
                              for i in range(0, len(x), 256)])
    params = {"objective": "multi:softprob", "num_class": len(meta["labels"]), "max_depth": depth, "eta": 0.1,
              "tree_method": "hist", "subsample": 0.8, "colsample_bytree": 0.6, "nthread": 1, "seed": 0}
    (booster, seconds) = timed(xgboost.train, params, xgboost.DMatrix(emb, label=faces.labels), rounds)
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / "model.ubj"))
    spec = {"kind": "xgboost", "num_features": int(emb.shape[1]), "num_classes": len(meta["labels"]),
            "labels": list(meta["labels"]), "model": "model.ubj", "checkpoint_sha256": sha256_file(checkpoint),
            "params": {**params, "rounds": rounds}, "train": {"n": len(emb), "data": data},
            "command": "benchmarks/export.py (fit_head)"}
    (folder / "head.json").write_text(json.dumps(spec, indent=2))
    return {"settings": spec["params"], "train_rows": len(emb), "fit_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/tiny-cpu/best.pt")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fer2013"))
    ap.add_argument("--head-path", help="a fitted xgboost head folder (head.json); default: fit one here")
    ap.add_argument("--head-rows", type=int, default=3500)
    ap.add_argument("--head-rounds", type=int, default=200)
    ap.add_argument("--head-depth", type=int, default=6)
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--json", help="write the results as JSON")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from fer_edge.bundle import Bundle
    from fer_edge.export import (export_bundle, load_checkpoint, onnx2int8, onnx2openvino, openvino2int8,
                                 torch2onnx)
    from fer_edge.export.xgboost2c import xgboost2c
    from fer_edge.formats import FORMATS
    from fer_edge.runtimes import select_backend

    work = Path(args.work or tempfile.mkdtemp(prefix="fer_edge_bench_export_"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint)
    result: dict = {"checkpoint": str(checkpoint), "data": args.data,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}

    head_dir = Path(args.head_path) if args.head_path else work / "head"
    if not args.head_path:
        result["head_fit"] = fit_head(checkpoint, args.data, head_dir, args.head_rows, args.head_rounds,
                                      args.head_depth)
        print(f"fitted head: {result['head_fit']}", flush=True)

    # 1. End to end.
    out = work / "bundle"
    shutil.rmtree(out, ignore_errors=True)
    _, seconds = timed(export_bundle, checkpoint, out, name="bench", val=args.data, head="xgboost",
                       head_path=head_dir, allow_drop=True)
    bundle = Bundle.open(out)
    m = bundle.manifest
    gate = m.evaluation["accuracy_gate"]
    result["export_bundle_seconds"] = round(seconds, 1)
    result["val"] = m.evaluation["val"]
    result["gate"] = {k: gate.get(k) for k in ("status", "drops_pp", "f1_drops_pp", "max_drop_pp", "max_f1_drop_pp")}
    result["head_val"] = m.heads["xgboost"].get("val")
    result["default_head"] = m.evaluation.get("default_head", {}).get("reason")
    result["sizes_bytes"] = {a.key(): size(bundle.file(a.path), [s for s in FORMATS[a.format].companions
                                                                  if s.startswith(".")]) for a in m.artifacts}
    h = m.heads["xgboost"]
    result["sizes_bytes"]["head/xgboost library"] = sum(bundle.file(p).stat().st_size for p in h["libraries"].values())
    result["sizes_bytes"]["head/xgboost model.ubj"] = bundle.file(h["model"]).stat().st_size
    result["head_trees"] = h.get("trees")
    print(f"export_bundle: {seconds:.1f} s; gate {gate['status']}: drops {gate['drops_pp']}, "
          f"F1 drops {gate['f1_drops_pp']}", flush=True)

    # 2. Each converter alone.
    steps = work / "steps"
    shutil.rmtree(steps, ignore_errors=True)
    model, meta = load_checkpoint(checkpoint)
    from fer_edge.export import input_spec
    from fer_edge.export.golden import read_golden

    spec = input_spec(meta)
    from fer_edge.data import load_dataset
    from fer_edge.preprocess import preprocess

    val = load_dataset(args.data, "val")
    pick = np.sort(np.random.default_rng(0).permutation(len(val))[:300])
    calib = preprocess(val.images[pick], spec)
    t = {}
    _, t["torch2onnx (+onnxsim, parity)"] = timed(torch2onnx, model, steps / "m.onnx", size=spec.size)
    _, t["onnx2int8 (ORT QDQ, 300 crops)"] = timed(onnx2int8, steps / "m.onnx", steps / "m.int8.onnx", calib)
    _, t["onnx2openvino fp32 (+parity)"] = timed(onnx2openvino, steps / "m.onnx", steps / "m.xml")
    _, t["onnx2openvino fp16 (+parity)"] = timed(onnx2openvino, steps / "m.onnx", steps / "m16.xml", fp16=True)
    _, t["openvino2int8 (NNCF, 300 crops)"] = timed(openvino2int8, steps / "m.xml", steps / "m.int8.xml", calib)
    with tempfile.TemporaryDirectory() as cache:
        _, t["xgboost2c (generate + CMake build, cold cache)"] = timed(
            xgboost2c, head_dir / "model.ubj", steps / "head", num_features=int(meta["feature_dim"]),
            num_classes=len(meta["labels"]), cache_dir=cache)
    result["step_seconds"] = {k: round(v, 2) for k, v in t.items()}
    for k, v in t.items():
        print(f"  {k:48s} {v:7.2f} s", flush=True)

    # 3. Backbone latency, batch 1, 1 thread.
    golden = read_golden(out, m.golden)
    crops = [golden["input"][i:i + 1] for i in range(len(golden["input"]))]
    lat = {}
    for a in m.artifacts:
        sel = select_backend(bundle, FORMATS[a.format].backend, precision=a.precision, threads=1)
        lat[a.key()] = latency(sel.backend.run, crops, args.runs)
        print(f"  {a.key():16s} batch 1, 1 thread: {lat[a.key()]['wall_ms_p50']:.3f} ms", flush=True)
    result["backbone_latency_b1_1thr"] = lat
    result["int8_speedup_b1_1thr"] = {f: round(lat[f"{f}/fp32"]["wall_ms_p50"] / lat[f"{f}/int8"]["wall_ms_p50"], 2)
                                      for f in ("onnx", "openvino") if f"{f}/int8" in lat}

    # 4. Heads, batch 1 and 32, 1 thread.
    import treelite
    import xgboost

    from fer_edge.runtimes.heads import load_head

    compiled = load_head(bundle, "xgboost", threads=1)
    booster = xgboost.Booster(model_file=str(bundle.file(h["model"])))
    booster.set_param({"nthread": 1})
    tl = treelite.frontend.load_xgboost_model(str(bundle.file(h["model"])), format_choice="ubjson")
    rng = np.random.default_rng(0)
    emb = np.concatenate([select_backend(bundle, "onnxruntime", precision="fp32").backend.run(
        preprocess(val.images[pick[i:i + 64]], spec))["embedding"] for i in range(0, 256, 64)])
    heads = {}
    for batch in (1, 32):
        inputs = [np.ascontiguousarray(emb[rng.integers(0, len(emb), batch)]) for _ in range(64)]
        heads[batch] = {
            "compiled (load_head, ctypes)": latency(lambda x: compiled(x), inputs, args.runs),
            "xgboost inplace_predict": latency(lambda x: booster.inplace_predict(x), inputs, args.runs),
            "treelite.gtil.predict": latency(lambda x: treelite.gtil.predict(tl, x, nthread=1), inputs,
                                             max(30, args.runs // 5)),
        }
        for k, v in heads[batch].items():
            print(f"  head {k:30s} batch {batch:2d}: cpu {v['cpu_ms_p50']:.3f} ms, wall {v['wall_ms_p50']:.3f} ms",
                  flush=True)
    result["head_latency_1thr"] = {str(b): v for b, v in heads.items()}
    x1 = heads[1]
    result["compiled_vs_xgboost_b1_cpu"] = round(x1["xgboost inplace_predict"]["cpu_ms_p50"]
                                                 / x1["compiled (load_head, ctypes)"]["cpu_ms_p50"], 1)
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps({k: result[k] for k in ("int8_speedup_b1_1thr", "compiled_vs_xgboost_b1_cpu", "gate")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
