"""`base`'s time per crop with ncnn FP16 against ONNX Runtime INT8, in one run, on the same crops.

    OMP_NUM_THREADS=1 python benchmarks/ncnn_base.py --json benchmarks/ncnn-base-avx2.json

Each pair is timed end to end as a user calls it, `Recognizer("base", backend=B, precision=P,
threads=1).predict(crop)` (preprocessing, backbone, head, Prediction), one crop per call, on the
first --per-class FER2013 test crops of each class. The pairs alternate round by round (--rounds),
so a drift of a shared machine's load falls on both; the median and interquartile range of all
calls are reported, with the ratio to ONNX Runtime INT8 (what `auto` served before ncnn shipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np

PAIRS = (("onnxruntime", "int8"), ("ncnn", "fp16"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/datasets/fer2013")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()

    import fer_edge
    from fer_edge.data import load_dataset
    from fer_edge.runtimes.machine import machine_info

    faces = load_dataset(args.data, "test", limit_per_class=args.per_class)
    recs = {f"{b}/{p}": fer_edge.Recognizer("base", backend=b, precision=p, threads=1) for b, p in PAIRS}
    times: dict[str, list[float]] = {k: [] for k in recs}
    labels: dict[str, list[int]] = {k: [] for k in recs}
    load = [os.getloadavg()]
    for r in recs.values():  # warm-up
        for img in faces.images[:5]:
            r.predict(img)
    for _ in range(args.rounds):
        for key, rec in recs.items():
            got = []
            for img in faces.images:
                t = time.perf_counter()
                p = rec.predict(img)
                times[key].append((time.perf_counter() - t) * 1000)
                got.append(fer_edge.EMOTIONS.index(p.label))
            labels[key] = got
    load.append(os.getloadavg())
    ref = float(np.median(times["onnxruntime/int8"]))
    rows = []
    for key, ts in times.items():
        q1, med, q3 = np.percentile(ts, [25, 50, 75])
        acc = float(np.mean(np.array(labels[key]) == faces.labels))
        rows.append({"pair": key, "ms_p50": round(float(med), 3), "ms_iqr": round(float(q3 - q1), 3),
                     "vs_onnxruntime_int8": round(float(med) / ref, 3), "n_calls": len(ts), "slice_accuracy": acc})
    agree = float(np.mean(np.array(labels["ncnn/fp16"]) == np.array(labels["onnxruntime/int8"])))
    print(f"base, one thread, batch 1, end to end; {len(faces)} test crops x {args.rounds} rounds; "
          f"load {load[0][0]:.2f} -> {load[1][0]:.2f}")
    print("| pair | ms/crop p50 (IQR) | vs ORT INT8 | slice accuracy |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['pair']} | {r['ms_p50']:.2f} ({r['ms_iqr']:.2f}) | {r['vs_onnxruntime_int8']:.2f}x | "
              f"{r['slice_accuracy']:.2%} |")
    print(f"top-1 agreement ncnn/fp16 vs onnxruntime/int8: {agree:.2%}")
    if args.json:
        out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
               "python": platform.python_version(), "command": "OMP_NUM_THREADS=1 python benchmarks/ncnn_base.py "
               f"--json {args.json}", "per_class": args.per_class, "rounds": args.rounds,
               "load_avg_start": load[0], "load_avg_end": load[1], "rows": rows, "agreement": agree}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
