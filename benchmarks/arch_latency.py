"""Backbone latency per architecture as shipped: FP32 and calibrated INT8 ONNX on ONNX Runtime.

Speed does not depend on the weights, so nets are measured freshly initialised (BN statistics
from a few real batches, so INT8 calibration sees realistic ranges). This picks an architecture
for a latency target *before* spending GPU time training it. `int8_ms` is the INT8 graph as the
exporter writes it (a thin stem with a small output kept FP32: export/onnx2int8.py);
`int8_all_ms` quantizes the stem too (the exporter's rule before 2026-11-30's second session),
measured in the same run for the comparison.

    python benchmarks/arch_latency.py --archs tiny_fer,nano_fer --threads 1 --json benchmarks/arch-latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(path: Path, x: np.ndarray, threads: int, runs: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(20):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="tiny_fer,nano_fer,mobile_fer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/datasets/fer2013"))
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    from fer_edge.data import load_dataset
    from fer_edge.export.onnx2int8 import onnx2int8
    from fer_edge.export.torch2onnx import torch2onnx
    from fer_edge.preprocess import InputSpec, preprocess
    from fer_edge.train.models import count_params, create_model

    torch.set_num_threads(args.threads)
    spec = InputSpec(mean=(0.5,), std=(0.25,))
    faces = load_dataset(args.data, "val", limit_per_class=50)
    calib = preprocess(faces.images, spec)
    x = calib[:1].copy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            torch.manual_seed(0)
            net = create_model(arch)
            net.train()
            with torch.no_grad():  # BN statistics from real faces, so activations have real ranges
                for i in range(0, len(calib), 64):
                    net(torch.from_numpy(calib[i : i + 64]))
            net.eval()
            fp32 = Path(tmp) / f"{arch}.fp32.onnx"
            int8 = Path(tmp) / f"{arch}.int8.onnx"
            int8_all = Path(tmp) / f"{arch}.int8-all.onnx"
            torch2onnx(net, fp32, size=spec.size)
            onnx2int8(fp32, int8, calib)
            onnx2int8(fp32, int8_all, calib, fp32_stem_rule=False)
            row = {"arch": arch, "params": count_params(net),
                   "fp32_ms": measure(fp32, x, args.threads, args.runs),
                   "int8_ms": measure(int8, x, args.threads, args.runs),
                   "int8_all_ms": measure(int8_all, x, args.threads, args.runs)}
            rows.append(row)
            print(f"{arch:12s} {row['params']:>10,d} params  FP32 {row['fp32_ms']:.3f} ms  INT8 {row['int8_ms']:.3f} ms  "
                  f"INT8 with the stem quantized {row['int8_all_ms']:.3f} ms", flush=True)
    result = {"command": " ".join(["python", *sys.argv]), "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "batch": 1, "backend": "onnxruntime CPU", "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
