"""OpenVINO INT8 calibration variants (NNCF) of one checkpoint, measured on FER2013 val against
the FP32 IR: accuracy and macro-F1 drop, top-1 agreement, and batch-1 one-thread latency.

    PYTHONPATH=. python benchmarks/int8_calibration.py CHECKPOINT [--data DIR] [--variants a,b] [--json out.json]

The exporter's choice (export/openvino2int8.py: KEEP_FLOAT, FAST_BIAS_CORRECTION; export/sampling.py:
CALIB_SIZE) comes from this table on the H200 checkpoints (2026-11-30, Intel Xeon, avx512_vnni/bf16):

| variant (tiny = nano_fer)                         | d acc pp | d macro-F1 pp | agree  |
|---------------------------------------------------|----------|---------------|--------|
| NNCF defaults, 300 crops (the old export)          | 0.33     | 3.43          | 96.0 % |
| defaults, 1000 crops                               | 0.17     | 3.29          | 96.1 % |
| 700 class-balanced crops + their mirror images     | 0.20     | 2.40          | 96.1 % |
| preset MIXED, 300                                  | 0.33     | 3.43          | 96.0 % |
| full bias correction, 300                          | 0.36     | 3.43          | 97.9 % |
| first conv FP32, 300                               | 0.45     | 3.48          | 96.3 % |
| classifier FP32, 300                               | 0.11     | 0.33          | 96.2 % |
| first conv + classifier FP32, 300                  | 0.22     | 0.01          | 96.6 % |
| classifier FP32, full bias correction, 1000 (kept) | 0.00     | -0.06         | 98.4 % |
| same + preset MIXED                                | 0.03     | -0.03         | 98.4 % |

base (vgg_fer): defaults/300 0.08 / 0.31 pp, 98.6 %; the kept variant 0.06 / -0.02 pp, 99.2 %.
Latency (tiny, OpenVINO, batch 1, 1 thread): FP32 0.38 ms, kept INT8 0.23 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name: (crops, class-balanced + mirrored, nncf.quantize keyword arguments)
    "default300": (300, False, {}),
    "default1000": (1000, False, {}),
    "balanced700_flip": (700, True, {}),
    "mixed300": (300, False, {"preset": "mixed"}),
    "biascorr300": (300, False, {"fast_bias_correction": False}),
    "first_conv300": (300, False, {"keep": ["first_conv"]}),
    "classifier300": (300, False, {"keep": ["classifier"]}),
    "first_conv_classifier300": (300, False, {"keep": ["first_conv", "classifier"]}),
    "kept": (1000, False, {"keep": ["classifier"], "fast_bias_correction": False}),
    "kept_mixed": (1000, False, {"keep": ["classifier"], "fast_bias_correction": False, "preset": "mixed"}),
}
F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def main() -> None:
    import nncf
    import openvino as ov

    from fer_edge.data import load_dataset
    from fer_edge.export import input_spec, load_checkpoint, onnx2openvino, torch2onnx
    from fer_edge.metrics import classification_report
    from fer_edge.preprocess import preprocess

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default="../shared/datasets/fer2013")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json")
    args = p.parse_args()
    nncf.set_log_level(logging.ERROR)
    model, meta = load_checkpoint(args.checkpoint)
    spec = input_spec(meta)
    work = Path(tempfile.mkdtemp(prefix="int8_calibration_"))
    torch2onnx(model, work / "m.onnx", size=spec.size, metadata={}, simplify=True)
    onnx2openvino(work / "m.onnx", work / "fp32.xml")
    val = load_dataset(args.data, "val")
    x, y = preprocess(val.images, spec), val.labels
    core = ov.Core()

    def evaluate(m):
        c = core.compile_model(m, "CPU", F32)
        out = c.output("logits")
        pred = np.concatenate([c(x[i : i + 256])[out] for i in range(0, len(x), 256)]).argmax(1)
        r = classification_report(y, pred, val.classes)
        req, one = c.create_infer_request(), x[:1]
        for _ in range(50):
            req.infer({0: one})
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(200):
                req.infer({0: one})
            times.append((time.perf_counter() - t) / 200 * 1e3)
        return r["accuracy"], r["macro_f1"], pred, float(np.median(times))

    acc0, f10, pred0, ms0 = evaluate(core.read_model(work / "fp32.xml"))
    rows = {"fp32": {"accuracy": acc0, "macro_f1": f10, "ms": ms0}}
    print(f"fp32: accuracy {acc0:.4f} macro-F1 {f10:.4f} {ms0:.3f} ms", flush=True)
    rng = np.random.default_rng(0)
    for name in args.variants.split(","):
        n, balanced, kw = VARIANTS[name]
        if balanced:
            idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: n // 7] for c in range(7)])
        else:
            idx = np.random.default_rng(0).permutation(len(x))[:n]
        calib = x[np.sort(idx)]
        if balanced:
            calib = np.concatenate([calib, calib[..., ::-1]])
        fp32 = core.read_model(work / "fp32.xml")
        keep = kw.get("keep", [])
        names = ([next(o.get_friendly_name() for o in fp32.get_ordered_ops() if o.get_type_name() == "Convolution")]
                 if "first_conv" in keep else [])
        scope = nncf.IgnoredScope(names=names, types=["MatMul"] if "classifier" in keep else [], validate=False)
        with contextlib.redirect_stdout(io.StringIO()):
            q = nncf.quantize(fp32, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                              subset_size=len(calib), ignored_scope=scope,
                              fast_bias_correction=kw.get("fast_bias_correction", True),
                              preset=nncf.QuantizationPreset(kw.get("preset", "performance")))
        acc, f1, pred, ms = evaluate(q)
        rows[name] = {"accuracy": acc, "macro_f1": f1, "drop_pp": (acc0 - acc) * 100, "f1_drop_pp": (f10 - f1) * 100,
                      "agreement": float((pred == pred0).mean()), "ms": ms}
        print(name, json.dumps({k: round(v, 4) for k, v in rows[name].items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
