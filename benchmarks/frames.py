"""The frame path against `fer`'s, in one run: face detection + expression on whole frames.

    python benchmarks/frames.py --peer-venv /work/main/.cache/peers-venv --json benchmarks/frames.json
    python benchmarks/frames.py --min-size          # how small a face each detector still finds

Frames are 640x480 BGR scenes of FER2013 test faces pasted at 40-250 px (benchmarks/frame_scenes.py):
stills with one face, stills with 2-4 faces, and a clip of faces drifting a few pixels per frame.
Each pipeline runs at one thread (OpenCV, OpenMP, the model's backend):

- fer_edge default: `Recognizer(threads=1).predict_frame(frame)` (stills) and `run_video` with its
  default detect-every policy (the clip), and each with `detector="haar"`;
- `fer` 25.10.3: `FER().detect_emotions(frame)` (its Haar cascade + mini-Xception on TFLite) in
  the peers venv of `benchmarks/peers.py --setup` (benchmarks/peers_fer_frames_worker.py).

A face counts as found when a detection overlaps its pasted square at IoU > 0.5 (greedy, one
detection per face), and as right when that detection's label is the face's test label. RSS is
read before and after each pipeline's loop; --leak N runs the default detector alone over N frames.
The machine is shared, so `fer` runs first and again last on each set, and fps ratios are taken
against its faster run.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frame_scenes import background, paste, sequence, stills  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".cache" / "peers-venv"
IOU = 0.5
CLIP_FRAMES = 15  # frames per clip of 3 moving faces (half a second at 30 fps)
# The clip set is --clip frames cut into clips of CLIP_FRAMES, three distinct faces each: 600 frames
# make 120 faces. (It was 150 frames, 30 faces, until 2026-12-03: too few faces to tell a 58 % model
# from a 68 % one, since "right" counts each face's fate about 15 times over.)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def score(truths: list, found: list[tuple[tuple, str]], labels: list[str]) -> tuple[int, int, int]:
    """(faces found, expressions right, false detections) of one frame; found = [(box, label)]."""
    pairs = sorted(((iou(t[0], f[0]), i, j) for i, t in enumerate(truths) for j, f in enumerate(found)), reverse=True)
    hit, used, right = set(), set(), 0
    for overlap, i, j in pairs:
        if overlap <= IOU:
            break
        if i in hit or j in used:
            continue
        hit.add(i)
        used.add(j)
        right += found[j][1] == labels[truths[i][1]]
    return len(hit), right, len(found) - len(used)


def summarise(name: str, ms: list[float], scores: list, rss: tuple[float, float], **extra) -> dict:
    a = np.asarray(ms)
    found, right, false = (int(sum(s[k] for s in scores)) for k in range(3))
    return {"name": name, **extra, "frames": len(ms), "ms_per_frame": {"p50": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "mean": float(a.mean())}, "fps": 1000.0 / float(a.mean()),
            "found": found, "right": right, "false": false, "rss_mb": {"start": round(rss[0], 1), "end": round(rss[1], 1)}}


def run_stills(rec, frames, truths, labels, detector: str) -> dict:
    for frame in frames[:3]:
        rec.predict_frame(frame, detector=detector)
    start, ms, scores = rss_mb(), [], []
    for frame, t in zip(frames, truths):
        t0 = time.perf_counter_ns()
        res = rec.predict_frame(frame, detector=detector)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        scores.append(score(t, [(r.box, r.prediction.label) for r in res], labels))
    from fer_edge.detect import detector_for

    return summarise(f"fer_edge predict_frame ({detector_for(rec, detector).name})", ms, scores, (start, rss_mb()),
                     detector=detector_for(rec, detector).describe())


def run_clip(rec, frames, truths, labels, detector: str, every: int | None, clips: int) -> dict:
    """run_video over each of `clips` equal parts of the frames (each a clip of its own)."""
    from fer_edge.video import VideoConfig, run_video

    cfg = VideoConfig(detector=detector) if every is None else VideoConfig(detector=detector, detect_every=every)
    records: list = []
    run_video(frames[:3], rec, config=cfg)
    start = rss_mb()
    for part in np.array_split(np.arange(len(frames)), clips):
        run_video(frames[part[0]:part[-1] + 1], rec, config=cfg, on_frame=records.append)
    ms = [r["ms"]["total"] for r in records]
    scores = [score(t, [(tuple(f["box"]), f["label"]) for f in r["faces"]], labels) for r, t in zip(records, truths)]
    detected = sum(r["detected"] for r in records)
    name = rec._face_detectors[detector].name if detector in getattr(rec, "_face_detectors", {}) else detector
    return summarise(f"fer_edge run_video ({name}, detect_every={cfg.detect_every})", ms, scores,
                     (start, rss_mb()), config={"detect_every": cfg.detect_every, "redetect_below": cfg.redetect_below},
                     frames_detected=int(detected))


def run_fer(peer_python: Path, frames: np.ndarray, truths, labels, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/frames.npy", frames)
        worker = Path(__file__).resolve().parent / "peers_fer_frames_worker.py"
        subprocess.run([str(peer_python), str(worker), f"{tmp}/frames.npy", f"{tmp}/out.json", "--threads",
                        str(threads)], check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        out = json.load(open(f"{tmp}/out.json"))
    scores = [score(t, [(tuple(f["box"]), max(f["emotions"], key=f["emotions"].get)) for f in faces], labels)
              for faces, t in zip(out["faces"], truths)]
    return summarise(f"fer {out['fer_version']} FER().detect_emotions (Haar)", out["ms"], scores,
                     (out["rss_mb"]["start"], out["rss_mb"]["end"]), opencv=out["opencv"], runtime=out["runtime"])


def leak(n: int, images, labels) -> dict:
    from fer_edge.detect import create_detector

    det = create_detector("auto", threads=1)
    frames = [f for f, _ in stills(images, labels, 30, (1, 3), seed=7)]
    for f in frames:
        det.detect(f)
    start, t0 = rss_mb(), time.perf_counter()
    for i in range(n):
        det.detect(frames[i % len(frames)])
    return {"detector": det.describe(), "frames": n, "rss_mb": {"start": round(start, 1), "end": round(rss_mb(), 1)},
            "growth_mb": round(rss_mb() - start, 2), "ms_per_frame_mean": (time.perf_counter() - t0) / n * 1000}


def min_size(images, labels, sizes=(16, 20, 24, 28, 32, 40, 48, 64)) -> list[dict]:
    """Recall of each detector on one face per frame, shrunk so the face is `size` px (min_face=size
    made the detector work at exactly this scale)."""
    import cv2

    from fer_edge.detect import DETECTORS, create_detector

    rows = []
    for name, cls in DETECTORS.items():
        if not cls.probe()[0]:
            continue
        det = create_detector(name, min_face=8, threads=1)
        for size in sizes:
            rng = np.random.default_rng(size)
            found = 0
            for img in images:
                frame = background(rng)
                box = (int(rng.integers(0, 640 - 200)), int(rng.integers(0, 480 - 200)), 200, 200)
                paste(frame, img, box)
                f = 200 / size
                small = cv2.resize(frame, (round(640 / f), round(480 / f)), interpolation=cv2.INTER_AREA)
                found += any(iou(tuple(v / f for v in box), d.box) > IOU for d in det.detect(small))
            rows.append({"detector": name, "face_px": size, "found": found, "faces": len(images)})
            print(f"{name:6s} face {size:3d} px: {found}/{len(images)}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| pipeline | ms/frame p50 | p95 | mean | fps (1000/mean) | found | right | false | RSS MB start->end |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["ms_per_frame"]
        lines.append(f"| {r['name']} | {m['p50']:.1f} | {m['p95']:.1f} | {m['mean']:.1f} | {r['fps']:.1f} | {r['found']} | {r['right']} "
                     f"| {r['false']} | {r['rss_mb']['start']:.0f}->{r['rss_mb']['end']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    ap.add_argument("--peer-venv", default=str(PEER_VENV))
    ap.add_argument("--one", type=int, default=120, help="stills with one face")
    ap.add_argument("--several", type=int, default=80, help="stills with 2-4 faces")
    ap.add_argument("--clip", type=int, default=600, help=f"frames of moving faces (clips of {CLIP_FRAMES} frames, 3 faces each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--leak", type=int, default=1500, help="frames through the default detector alone (0: skip)")
    ap.add_argument("--min-size", action="store_true", help="only the recall-by-face-size table")
    ap.add_argument("--no-haar", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from fer_edge import Recognizer
    from fer_edge.data import load_image_folder
    from fer_edge.labels import EMOTIONS

    test = load_image_folder(Path(args.data) / "test")
    labels = list(EMOTIONS)
    if args.min_size:
        pick = np.random.default_rng(3).choice(len(test), 200, replace=False)
        rows = min_size(test.images[pick], test.labels[pick])
        if args.json:
            json.dump({"min_size": rows}, open(args.json, "w"), indent=1)
        return
    peer = Path(args.peer_venv) / "bin" / "python"
    if not peer.exists():
        raise SystemExit(f"no peer venv at {args.peer_venv}: run python benchmarks/peers.py --setup or pass --peer-venv")
    load = os.getloadavg()
    rec = Recognizer(threads=args.threads)
    clips = max(1, args.clip // CLIP_FRAMES)
    sets = {"one face": list(stills(test.images, test.labels, args.one, (1, 1), seed=0)),
            "2-4 faces": list(stills(test.images, test.labels, args.several, (2, 4), seed=1)),
            "clip": [s for k in range(clips) for s in sequence(test.images, test.labels, CLIP_FRAMES,
                                                                n_faces=3, seed=2 + k)]}
    detectors = ["auto"] + ([] if args.no_haar else ["haar"])
    results: dict = {}
    for name, scenes in sets.items():
        if not scenes:
            continue
        frames = np.stack([f for f, _ in scenes])
        truths = [t for _, t in scenes]
        rows = [run_fer(peer, frames, truths, labels, args.threads)]
        for det in detectors:
            rows.append(run_stills(rec, frames, truths, labels, det))
            if name == "clip":
                rows.append(run_clip(rec, frames, truths, labels, det, None, clips))
        again = run_fer(peer, frames, truths, labels, args.threads)  # load drifts on a shared machine:
        again["name"] += ", run again last"  # fer runs first and last, and we compare with its faster run
        rows.append(again)
        ref = max(rows[0]["fps"], again["fps"])
        for r in rows:
            r["vs_fer_fps"] = round(r["fps"] / ref, 2)
        results[name] = {"faces": sum(len(t) for t in truths), "rows": rows}
        print(f"\n{name}: {len(frames)} frames, {results[name]['faces']} faces\n{table(rows)}", flush=True)
        print("fps vs fer's faster run: " + ", ".join(f"{r['name']}: {r['vs_fer_fps']}x" for r in rows[1:-1]), flush=True)
    if args.leak:
        results["leak"] = leak(args.leak, test.images, test.labels)
        print(f"\nleak: {json.dumps(results['leak'])}")
    out = {"command": " ".join(["python", *sys.argv]), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "loadavg_start": [round(v, 2) for v in load], "loadavg_end": [round(v, 2) for v in os.getloadavg()]},
           "threads": args.threads, "model": rec.describe()["model"], "backend": rec.backend,
           "precision": rec.precision, "results": results}
    print(f"load average {out['machine']['loadavg_start']} -> {out['machine']['loadavg_end']}")
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
