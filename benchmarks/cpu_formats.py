"""Which artifact form is fastest on this CPU: every packaged model, one thread, batch 1, backbone only.

    OMP_NUM_THREADS=1 python benchmarks/cpu_formats.py --json benchmarks/cpu-formats-avx2.json

Tried for each packaged model (`tiny`, `nano`, `base`), all from what the bundle holds (its torch
checkpoint is not packaged): ONNX Runtime FP32 and the shipped INT8 at each graph optimisation level;
INT8 re-quantized from the FP32 ONNX in the QDQ and QOperator forms, U8S8 (7-bit weights,
reduce_range, as shipped) and U8U8, per-channel and per-tensor (calibrated on --calib val crops);
OpenVINO IR FP32/INT8 with the LATENCY and THROUGHPUT hints; and ncnn FP32 converted from the FP32 ONNX
by `pnnx` (only when the `ncnn` and `pnnx` wheels import: e.g. `pip install --target DIR ncnn pnnx`
and DIR on PYTHONPATH). `base` ships only a QDQ INT8 ONNX: its FP32 graph here is that file
dequantized (INT8 weights times their scales, activation Q/DQ pairs removed), so its FP32 rows
are the shipped weights in FP32 arithmetic, not the lost FP32 checkpoint.

Timing: `--rounds` rounds, each timing every variant for `--calls` calls after 3 warm-up calls, so a
drift in a shared machine's load spreads over all variants; the median and interquartile range
of all calls are reported, with the ratio to the form `auto` served before it timed FP32 (ONNX Runtime,
shipped INT8, all optimisations). Accuracy and top-1 agreement with the FP32 graph are measured on
the first --val crops per class of FER2013 val (a slice: compare variants, not with the model card).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ORT_LEVELS = ("disable", "basic", "extended", "all")
REFERENCE = "ort int8 shipped (QDQ u8s8 per-channel) opt=all"


def dequantize_qdq(model):
    """The shipped INT8 weights in FP32 arithmetic (export/qdq2fp32.py, which `fer-edge add-ncnn` uses too)."""
    from fer_edge.export.qdq2fp32 import dequantize

    return dequantize(model)


def quantize(src: Path, dst: Path, calib: np.ndarray, *, qoperator: bool, u8u8: bool, per_channel: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fer_edge.export.onnx2int8 import fp32_stem, quiet_root_logger

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([calib[i:i + 32] for i in range(0, len(calib), 32)])

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    import onnx

    pre = dst.with_suffix(".pre.onnx")
    with quiet_root_logger():
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if u8u8 else QuantType.QInt8, reduce_range=not u8u8,
                        nodes_to_exclude=fp32_stem(onnx.load(str(pre))), calibration_providers=["CPUExecutionProvider"])
    return dst


class OrtRunner:
    def __init__(self, path: Path, level: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x):
        return self.s.run(["logits"], {"input": x})[0]


class OvRunner:
    def __init__(self, path: Path, hint: str):
        import openvino as ov

        cfg = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        if hint == "LATENCY":
            cfg["NUM_STREAMS"] = 1
        self.c = ov.Core().compile_model(str(path), "CPU", cfg)
        self.req = self.c.create_infer_request()
        self.out = self.c.output("logits")

    def __call__(self, x):
        return self.req.infer({0: x})[self.out].copy()


class NcnnRunner:
    def __init__(self, param: Path, fp32_storage: bool):
        import ncnn

        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = 1
        if fp32_storage:  # ncnn stores/computes in FP16 where the CPU allows; keep FP32 for exactness
            self.net.opt.use_fp16_storage = self.net.opt.use_fp16_packed = self.net.opt.use_fp16_arithmetic = False
        self.net.load_param(str(param))
        self.net.load_model(str(param.with_suffix(".bin")))

    def __call__(self, x):
        outs = []
        for img in x:  # ncnn's extractor takes one CHW image
            ex = self.net.create_extractor()
            ex.input("in0", self.ncnn.Mat(np.ascontiguousarray(img)))
            _, out = ex.extract("out0")
            outs.append(np.array(out).reshape(-1))
        return np.stack(outs)


def pnnx_convert(onnx_path: Path, work: Path, size: tuple[int, int]) -> Path | None:
    import pnnx

    exe = Path(pnnx.__file__).with_name("pnnx")
    work = work / "ncnn"
    work.mkdir(exist_ok=True)
    dst = work / onnx_path.name
    shutil.copy(onnx_path, dst)
    r = subprocess.run([str(exe), dst.name, f"inputshape=[1,1,{size[0]},{size[1]}]"], cwd=work, capture_output=True,
                       text=True)
    param = dst.with_name(dst.stem + ".ncnn.param")
    if r.returncode or not param.exists():
        print(f"pnnx failed on {onnx_path}: {r.stderr[-500:]}", file=sys.stderr)
        return None
    return param


def variants(model: str, work: Path, calib: np.ndarray, size) -> dict[str, tuple]:
    """name -> (runner factory, facts) for one packaged model."""
    import onnx

    from fer_edge.bundle import Bundle

    b = Bundle.open(model)
    onnx_dir = b.root / "backbone" / "onnx"
    fp32 = onnx_dir / "model.fp32.onnx"
    derived = not fp32.exists()
    if derived:
        fp32 = work / f"{model}.fp32.dequantized.onnx"
        onnx.save(dequantize_qdq(onnx.load(str(onnx_dir / "model.int8.onnx"))), str(fp32))
    out: dict[str, tuple] = {}
    tag = " (dequantized from the shipped INT8)" if derived else ""
    for lvl in ORT_LEVELS:
        out[f"ort fp32{tag} opt={lvl}"] = (lambda p=fp32, l=lvl: OrtRunner(p, l),
                                           dict(runtime="onnxruntime", precision="fp32", form="fp32", opt=lvl))
    for lvl in ORT_LEVELS:
        out[f"ort int8 shipped (QDQ u8s8 per-channel) opt={lvl}"] = (
            lambda l=lvl: OrtRunner(onnx_dir / "model.int8.onnx", l),
            dict(runtime="onnxruntime", precision="int8", form="QDQ", types="u8s8 (reduce_range)", granularity="per-channel",
                 opt=lvl, shipped=True))
    for qop in (False, True):
        for u8u8 in (False, True):
            for pc in (True, False):
                form, types = ("QOperator" if qop else "QDQ"), ("u8u8" if u8u8 else "u8s8")
                gran = "per-channel" if pc else "per-tensor"
                dst = work / f"{model}.{form}.{types}.{gran}.onnx"
                quantize(fp32, dst, calib, qoperator=qop, u8u8=u8u8, per_channel=pc)
                out[f"ort int8 {form} {types} {gran} opt=all"] = (
                    lambda p=dst: OrtRunner(p, "all"),
                    dict(runtime="onnxruntime", precision="int8", form=form, types=types + ("" if u8u8 else " (reduce_range)"),
                         granularity=gran, opt="all"))
    ov_dir = b.root / "backbone" / "openvino"
    ov_src = {"fp32": ov_dir / "model.fp32.xml", "int8": ov_dir / "model.int8.xml"}
    if derived:  # OpenVINO reads ONNX: the dequantized FP32 graph, and the shipped QDQ (its LPT makes it INT8)
        ov_src = {"fp32": fp32, "int8": onnx_dir / "model.int8.onnx"}
    if importlib.util.find_spec("openvino"):
        for prec, path in ov_src.items():
            for hint in ("LATENCY", "THROUGHPUT"):
                out[f"openvino {prec} {path.suffix[1:]} hint={hint}"] = (
                    lambda p=path, h=hint: OvRunner(p, h), dict(runtime="openvino", precision=prec, opt=hint,
                                                                form=path.suffix[1:]))
    if importlib.util.find_spec("ncnn") and importlib.util.find_spec("pnnx"):
        param = pnnx_convert(fp32, work, size)
        if param is not None:
            for fp32_storage in (True, False):
                what = "fp32 storage" if fp32_storage else "ncnn defaults (fp16 storage where the CPU has it)"
                out[f"ncnn fp32 pnnx, {what}"] = (lambda p=param, f=fp32_storage: NcnnRunner(p, f),
                                                   dict(runtime="ncnn", precision="fp32", form="ncnn param/bin",
                                                        opt=what))
    return out


def bench(model: str, args, val_x, val_y, calib) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix=f"fer_cpu_formats_{model}_") as tmp:
        vs = variants(model, Path(tmp), calib, val_x.shape[2:])
        runners = {name: make() for name, (make, _) in vs.items()}
        x1 = [val_x[i:i + 1] for i in range(min(32, len(val_x)))]
        calls = args.calls if model != "base" else max(5, args.calls // 10)
        samples: dict[str, list[float]] = {n: [] for n in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                for x in x1[:3]:
                    run(x)
                for i in range(calls):
                    t0 = time.perf_counter_ns()
                    run(x1[i % len(x1)])
                    samples[name].append((time.perf_counter_ns() - t0) / 1e6)
        fp32_name = next(n for n in runners if n.startswith("ort fp32") and n.endswith("opt=all"))
        preds = {}
        for name, run in runners.items():
            step = 1 if vs[name][1]["runtime"] == "ncnn" else 64
            preds[name] = np.concatenate([run(val_x[i:i + step]) for i in range(0, len(val_x), step)]).argmax(1)
    ref = float(np.median(samples[REFERENCE]))
    rows = []
    for name, t in samples.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        rows.append({"model": model, "variant": name, **vs[name][1], "ms_p50": float(med), "ms_iqr": float(q3 - q1),
                     "vs_reference": float(med / ref), "n_calls": len(t),
                     "val_slice_accuracy": float((preds[name] == val_y).mean()),
                     "agreement_with_fp32": float((preds[name] == preds[fp32_name]).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    ap.add_argument("--models", default="tiny,nano,base")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=100, help="calls per variant per round (base: a tenth)")
    ap.add_argument("--val", type=int, default=40, help="val crops per class for accuracy and agreement")
    ap.add_argument("--calib", type=int, default=256, help="val crops to calibrate the re-quantized forms on")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from fer_edge.bundle import Bundle
    from fer_edge.data import load_image_folder
    from fer_edge.preprocess import preprocess

    val = load_image_folder(Path(args.data) / "val", limit_per_class=args.val)
    spec = Bundle.open("tiny").manifest.input
    val_x = preprocess(list(val.images), spec)
    rng = np.random.default_rng(0)
    calib_set = load_image_folder(Path(args.data) / "val")
    calib = preprocess(list(calib_set.images[rng.choice(len(calib_set.images), args.calib, replace=False)]), spec)
    load_start = os.getloadavg()
    rows = []
    for model in args.models.split(","):
        assert Bundle.open(model).manifest.input == spec, "one input spec for every packaged model"
        rows += bench(model, args, val_x, val.labels, calib)
        print(f"done {model}", file=sys.stderr, flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])) if Path("/proc/cpuinfo").exists() else set()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    versions = {m: __import__(m).__version__ for m in ("onnxruntime", "openvino", "ncnn")
                if importlib.util.find_spec(m)}
    print(f"{'model':5s} {'variant':62s} {'ms p50':>8s} {'IQR':>7s} {'vs ref':>7s} {'val acc':>8s} {'=fp32':>7s}")
    for r in rows:
        print(f"{r['model']:5s} {r['variant'][:62]:62s} {r['ms_p50']:8.3f} {r['ms_iqr']:7.3f} {r['vs_reference']:6.2f}x "
              f"{r['val_slice_accuracy'] * 100:7.2f}% {r['agreement_with_fp32'] * 100:6.1f}%")
    print(f"reference (1.00x): {REFERENCE}; cpu {cpu} ({', '.join(isa)}); load {load_start} -> {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "isa": isa,
            "cores": os.cpu_count(), "versions": versions, "load_avg_start": list(load_start),
            "load_avg_end": list(os.getloadavg()), "threads": 1, "batch": 1, "reference": REFERENCE,
            "val_slice": f"first {args.val} val crops per class ({len(val_x)})", "calib": args.calib,
            "command": " ".join(["python", "benchmarks/cpu_formats.py", *sys.argv[1:]]), "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
