"""Run `fer`'s own frame path, `FER().detect_emotions(frame)` (Haar + mini-Xception), on frames;
driven by benchmarks/frames.py inside the peers venv (`benchmarks/peers.py --setup`):

    .cache/peers-venv/bin/python benchmarks/peers_fer_frames_worker.py FRAMES.npy OUT.json [--threads 1]

`fer/fer.py` imports tensorflow, `requests` and Pillow (through fer/utils.py) at module level; the
peers venv has none of them (fer is installed without its dependencies). Before importing it, this
worker puts three stand-in modules into `sys.modules`: `tensorflow`, whose `lite.Interpreter` is
`ai_edge_litert.interpreter.Interpreter` with `num_threads` fixed (the TFLite runtime that
`tf.lite.Interpreter` forwards to, so fer's own calls run unchanged), and empty `requests` and
`PIL.Image` (used only for URLs, base64 strings and files; the frames here are numpy arrays).
Everything else is fer's code: its Haar cascade with its defaults (scaleFactor 1.1,
minNeighbors 5, minSize 50), padding, offsets, 64x64 resize and TFLite model. OpenCV runs with
`cv2.setNumThreads(threads)`.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import sys
import time
import types

import numpy as np


def install_stand_ins(threads: int) -> None:
    from ai_edge_litert.interpreter import Interpreter

    tf = types.ModuleType("tensorflow")
    tf.lite = types.SimpleNamespace(Interpreter=functools.partial(Interpreter, num_threads=threads))
    keras = types.ModuleType("tensorflow.keras")
    models = types.ModuleType("tensorflow.keras.models")
    models.load_model = None  # only for use_tflite=False, which this worker never asks for
    tf.keras = keras
    keras.models = models
    pil = types.ModuleType("PIL")
    pil.Image = types.ModuleType("PIL.Image")
    sys.modules.update({"tensorflow": tf, "tensorflow.keras": keras, "tensorflow.keras.models": models,
                        "requests": types.ModuleType("requests"), "PIL": pil, "PIL.Image": pil.Image})


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("frames", help=".npy of N x H x W x 3 uint8 BGR frames")
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(args.threads)
    install_stand_ins(args.threads)
    import logging

    from fer.fer import FER  # fer/__init__.py (25.10.3) does not re-export it

    logging.getLogger("fer").setLevel(logging.WARNING)
    detector = FER()
    frames = np.load(args.frames, mmap_mode="r")
    for i in range(min(args.warmup, len(frames))):
        detector.detect_emotions(np.ascontiguousarray(frames[i]))
    rss_start = rss_mb()
    results, times = [], []
    for frame in frames:
        frame = np.ascontiguousarray(frame)
        t0 = time.perf_counter_ns()
        faces = detector.detect_emotions(frame)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        results.append([{"box": [int(v) for v in f["box"]], "emotions": f["emotions"]} for f in faces])
    json.dump({"fer_version": importlib.metadata.version("fer"), "opencv": cv2.__version__,
               "runtime": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
               "threads": args.threads, "ms": times, "faces": results,
               "rss_mb": {"start": rss_start, "end": rss_mb()}}, open(args.out, "w"))


if __name__ == "__main__":
    main()
