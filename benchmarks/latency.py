"""Latency of a bundle per backend, precision, batch size and thread count, on this machine.

    python benchmarks/latency.py [--model tiny] [--batch 1,32] [--threads 1,2] [--json out.json]

Times `Recognizer.predict_batch` end to end (preprocessing + backbone + softmax) on real-looking
crops (the packaged sample faces), median and p95 over --runs calls after --warmup calls, and
reports milliseconds per crop. Every configuration runs in the same process, one after another,
so ratios between rows are comparable even on a shared, noisy machine; absolute figures are not.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle path or packaged name (default: packaged default)")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()

    import fer_edge
    from fer_edge.bundle import Bundle
    from fer_edge.data import read_image
    from fer_edge.demo import sample_faces
    from fer_edge.formats import FORMATS
    from fer_edge.runtimes import BACKENDS

    bundle = Bundle.open(args.model)
    crops = [read_image(p) for p in sample_faces()]
    rows = []
    for art in bundle.manifest.artifacts:
        backend = FORMATS[art.format].backend
        if not BACKENDS[backend].probe().usable:
            continue
        for threads in [int(t) for t in args.threads.split(",")]:
            rec = fer_edge.Recognizer(bundle=bundle, backend=backend, precision=art.precision, threads=threads)
            for batch in [int(b) for b in args.batch.split(",")]:
                images = [crops[i % len(crops)] for i in range(batch)]
                for _ in range(args.warmup):
                    rec.predict_batch(images)
                times = []
                for _ in range(max(10, args.runs // batch)):
                    t0 = time.perf_counter()
                    rec.predict_batch(images)
                    times.append((time.perf_counter() - t0) / batch * 1000)
                rows.append({"backend": backend, "precision": art.precision, "threads": threads, "batch": batch,
                             "ms_per_crop_p50": float(np.median(times)),
                             "ms_per_crop_p95": float(np.percentile(times, 95))})
                r = rows[-1]
                print(f"{backend:12s} {art.precision:5s} threads {threads} batch {batch:3d}: "
                      f"{r['ms_per_crop_p50']:.3f} ms/crop (p95 {r['ms_per_crop_p95']:.3f})", flush=True)
    result = {"model": bundle.manifest.name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "cpu_count": __import__("os").cpu_count(), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
