"""Run every artifact of the packaged models on this machine and write what another CPU class's run
is compared with (tools/arm64/compare.py): each artifact's outputs on the golden inputs, and its
FER2013 figures with the per-image predictions. Needs only numpy and the backends (no torch), so
it runs inside the emulated arm64 root as well as on the x86 host.

    python tools/arm64/measure.py --data DIR [--limit-per-class N] --out RUN.json   (+ RUN.npz)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fer_edge.bundle import Bundle, packaged_models
from fer_edge.data import load_dataset
from fer_edge.evaluate import agreement, evaluate, public
from fer_edge.formats import FORMATS
from fer_edge.parity import compare, isa_family
from fer_edge.recognizer import Recognizer
from fer_edge.runtimes import BACKENDS
from fer_edge.runtimes.machine import machine_info


def measure_model(name: str, data: str, split: str, limit: int | None, threads: int | None,
                  arrays: dict[str, np.ndarray]) -> dict:
    bundle = Bundle.open(name)
    golden = {k: np.load(bundle.file(rel), allow_pickle=False) for k, rel in bundle.manifest.golden["files"].items()}
    faces = load_dataset(data, split, size=tuple(bundle.manifest.input.size), limit_per_class=limit)
    out = {"model": name, "data": data, "split": split, "tta": "none", "limit_per_class": limit, "n": len(faces),
           "runs": {}, "predictions": {}, "golden": {}, "skipped": {}, "agreement": {}}
    reports = {}
    for art in bundle.manifest.artifacts:
        backend = FORMATS[art.format].backend
        cls = BACKENDS.get(backend)
        probe = cls.probe() if cls else None
        if probe is None or not probe.usable:
            out["skipped"][art.key()] = probe.reason if probe else f"no backend {backend!r} registered"
            continue
        rec = Recognizer(bundle=bundle, backend=backend, precision=art.precision, threads=threads)
        outputs = rec.backbone(golden["input"])
        out["golden"][art.key()] = compare(golden, outputs)  # vs the torch FP32 outputs recorded at export
        for role, value in outputs.items():
            arrays[f"{name}|{art.key()}|{role}"] = np.asarray(value, np.float32)
        key = f"{rec.backend}/{rec.precision}"
        t0 = time.perf_counter()
        reports[key] = evaluate(rec, faces, split)
        print(f"{name} {key}: accuracy {reports[key]['accuracy'] * 100:.2f} % on {len(faces)} images "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        out["runs"][key] = public(reports[key])
        out["predictions"][key] = reports[key]["_predictions"].tolist()
    for key, r in reports.items():  # as evaluate_matrix reports it, so record_evaluation can keep it
        backend, precision = key.split("/")
        if precision != "fp32" and f"{backend}/fp32" in reports:
            out["agreement"][f"{backend} {precision} vs fp32"] = agreement(r, reports[f"{backend}/fp32"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="an ImageFolder dataset root (FER2013 layout)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit-per-class", type=int, default=None,
                    help="the first N files of each class in sorted order (the CI slice); default: all")
    ap.add_argument("--models", default="all", help="comma list of packaged model names (in that order), or all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSON to write; the golden outputs go to the same name .npz")
    ap.add_argument("--command", default=None, help="the command line to record (the caller's, when wrapped)")
    args = ap.parse_args(argv)
    names = packaged_models() if args.models == "all" else args.models.split(",")
    arrays: dict[str, np.ndarray] = {}
    result = {"cpu_class": isa_family(), "machine": machine_info(), "threads": args.threads,
              "date": datetime.now(timezone.utc).date().isoformat(),
              "command": args.command or "python tools/arm64/measure.py " + " ".join(argv or sys.argv[1:]),
              "models": {}}
    out = Path(args.out)
    for name in names:  # written after each model: an emulated whole-split run takes long, keep what finished
        result["models"][name] = measure_model(name, args.data, args.split, args.limit_per_class, args.threads, arrays)
        out.write_text(json.dumps(result, indent=1))
        np.savez(out.with_suffix(".npz"), **arrays)
    print(f"wrote {out} and {out.with_suffix('.npz')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
