"""What a one-crop `Recognizer.predict` costs beyond the backend graph itself.

For each packaged model, times (timeit, best of `--repeat`, one thread, one 48x48 test crop):
`predict(crop)`, the Recognizer's stages (`preprocess`, `backbone`, `classify`), and the backend's
bare `InferenceSession.run` on the already preprocessed crop. `python_ms` = predict - run: the
price of preprocessing, the head, calibration and the Python between them.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py --models tiny,nano --json benchmarks/overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import timeit
from pathlib import Path

import numpy as np


def best_ms(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e3


def measure(model: str, crop: np.ndarray, number: int, repeat: int) -> dict:
    from fer_edge import Recognizer

    rec = Recognizer(model, backend="onnxruntime", precision="int8", threads=1)
    backend = rec._selection.backend  # the bare session, to subtract: not a public surface
    batch = rec.preprocess([crop])
    outputs = rec.backbone(batch)
    feeds, names = {backend.input_name: batch}, list(backend.output_names)
    for _ in range(200):
        rec.predict(crop)
    row = {"model": model, "backend": f"{rec.backend}/{rec.precision}",
           "predict_ms": best_ms(lambda: rec.predict(crop), number, repeat),
           "preprocess_ms": best_ms(lambda: rec.preprocess([crop]), number, repeat),
           "backbone_ms": best_ms(lambda: rec.backbone(batch), number, repeat),
           "classify_ms": best_ms(lambda: rec.classify(outputs), number, repeat),
           "session_run_ms": best_ms(lambda: backend.session.run(names, feeds), number, repeat)}
    row["python_ms"] = row["predict_ms"] - row["session_run_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,nano")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/datasets/fer2013"))
    ap.add_argument("--number", type=int, default=2000, help="calls per timing")
    ap.add_argument("--repeat", type=int, default=5, help="timings per figure (the best is kept)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from fer_edge.data import load_image_folder

    crop = load_image_folder(Path(args.data) / "test", limit_per_class=1).images[0]
    rows = [measure(m, crop, args.number, args.repeat) for m in args.models.split(",")]
    cols = ("predict_ms", "session_run_ms", "python_ms", "preprocess_ms", "backbone_ms", "classify_ms")
    print("| model | backend | " + " | ".join(c[:-3] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    if args.json:
        import os

        result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.processor()
                  or platform.machine(), "load_avg": os.getloadavg(), "command": " ".join(["python", *sys.argv]),
                  "unit": "ms per call, best of repeat", "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
