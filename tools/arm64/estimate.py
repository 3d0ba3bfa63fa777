"""ON-PAPER ESTIMATE of each packaged model's INT8 latency on ARM64 CPUs, until a device measures it.

Emulation (tools/arm64/check.sh) proves correctness and accuracy on arm64, not speed. This script
counts each model's multiply-accumulates (torch forward hooks on its architecture), measures this
host's batch-1 ONNX Runtime INT8 time per crop on one thread, and scales that by the ratio of peak
INT8 MACs per second of one core (instruction width x pipes x clock, PEAK below) of this host and of
each ARM core: est_ms = host_ms x host_peak / arm_peak. It assumes ONNX Runtime reaches the same
fraction of peak on both, which small batch-1 models (overhead-bound: docs/benchmarks.md) do not
quite: read the figures as an order of magnitude, labelled "estimate" wherever they are quoted.

    OMP_NUM_THREADS=1 python tools/arm64/estimate.py --json benchmarks/arm64-estimate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np

# Peak INT8 MACs per cycle of one core for the kernels ONNX Runtime uses there, and the clock (GHz).
# This host (/proc/cpuinfo: AMD family 23 model 1, i.e. Zen 1, AVX2 + FMA, no VNNI): a 128-bit SIMD
# datapath (256-bit ops run as two halves), vpmaddubsw 16 u8 x s8 products per 128-bit op, one pipe.
# ARMv8.2 dot product (SDOT): 16 MACs per 128-bit op; A78AE / A76 have 2 NEON pipes, Neoverse V1 4.
# Cortex-A57 (no dot product): SMLAL widening multiply-accumulate, 8 MACs per 128-bit op, 2 pipes.
PEAK = {
    "host: AMD EPYC (Zen 1), AVX2, no VNNI": {"macs_per_cycle": 16, "ghz": 2.2},
    "Jetson Orin Nano / NX (Cortex-A78AE, 1.5-2.0 GHz)": {"macs_per_cycle": 32, "ghz": 1.5},
    "Raspberry Pi 5 (Cortex-A76, 2.4 GHz)": {"macs_per_cycle": 32, "ghz": 2.4},
    "AWS Graviton3 (Neoverse V1, 2.6 GHz)": {"macs_per_cycle": 64, "ghz": 2.6},
    "Jetson Nano (Cortex-A57, 1.43 GHz)": {"macs_per_cycle": 16, "ghz": 1.43},
}
HOST = next(iter(PEAK))


def count_macs(arch: str, size: tuple[int, int], channels: int, num_classes: int) -> int:
    import torch
    from torch import nn

    from fer_edge.train.models import create_model

    model = create_model(arch, num_classes, in_channels=channels).eval()
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, channels, *size))
    return total


def host_ms(name: str, runs: int) -> float:
    from fer_edge.bundle import Bundle
    from fer_edge.runtimes import select_backend
    from fer_edge.runtimes.selection import time_backend

    bundle = Bundle.open(name)
    x = np.load(bundle.file(bundle.manifest.golden["files"]["input"]))[:1].astype(np.float32)
    sel = select_backend(bundle, "onnxruntime", precision="int8", threads=1)
    return time_backend(sel.backend, x, warmup=20, runs=runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args(argv)
    from fer_edge.bundle import Bundle, packaged_models

    peak = {k: v["macs_per_cycle"] * v["ghz"] * 1e9 for k, v in PEAK.items()}
    rows = {}
    for name in packaged_models():
        m = Bundle.open(name).manifest
        macs = count_macs(m.model["arch"], tuple(m.input.size), m.input.channels, len(m.labels))
        ms = host_ms(name, args.runs)
        rows[name] = {"arch": m.model["arch"], "macs": macs, "host_ms": round(ms, 4),
                      "host_gmacs_per_s": round(macs / ms / 1e6, 2),
                      "estimate_ms": {k: round(ms * peak[HOST] / peak[k], 3) for k in PEAK if k != HOST}}
    print("ESTIMATE (on paper, not measured on ARM): ms per crop, batch 1, one core, ONNX Runtime INT8")
    devices = [k for k in PEAK if k != HOST]
    print(f"{'model':6s} {'MACs':>11s} {'host ms':>8s} {'GMAC/s':>7s}  " + "  ".join(d.split(' (')[0] for d in devices))
    for name, r in rows.items():
        print(f"{name:6s} {r['macs']:11,d} {r['host_ms']:8.3f} {r['host_gmacs_per_s']:7.2f}  "
              + "  ".join(f"{r['estimate_ms'][d]:>{len(d.split(' (')[0])}.2f}" for d in devices))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"estimate": True, "command": " ".join(["python", *sys.argv]), "peak": PEAK, "host": HOST,
                       "machine": platform.processor() or platform.machine(),
                       "date": datetime.now(timezone.utc).date().isoformat(), "models": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
