"""Face detectors and crop settings on FER2013 test faces pasted into larger frames.

    OMP_NUM_THREADS=1 python benchmarks/faces.py [--data ../shared/datasets/fer2013] [--per-class 40]
        [--json benchmarks/faces.json]

Two measurements, for every usable detector (`fer_edge.detect.DETECTORS`):
1. Detection: 10 frames of 640x480 with three test faces each, upscaled to 140 px (the size a
   face has in a webcam frame at a desk); a face counts as found at IoU > 0.5 with the pasted
   square. Median milliseconds per frame, one thread.
2. Framing: one face per frame (`--per-class` faces of each class), upright and turned by up to
   +-20 degrees; accuracy of the packaged default model on the detector's crop for each margin,
   with and without eye alignment, next to its accuracy on the original 48x48 crops. A missed
   face counts as wrong. This is how `Detector.margin` was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np

MARGINS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.2)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter)


def paste(frame, face, x, y, side, angle_deg=0.0):
    import cv2

    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR)
    if angle_deg:
        m = cv2.getRotationMatrix2D((side / 2, side / 2), angle_deg, 1.0)
        big = cv2.warpAffine(big, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
    frame[y:y + side, x:x + side] = big[:, :, None]


def detection(det, images, rng, n_frames=10):
    found = total = 0
    times = []
    for _ in range(n_frames):
        frame = np.empty((480, 640, 3), np.uint8)
        frame[:] = rng.integers(60, 200, 3)
        truths = []
        for k, x in enumerate((40, 250, 460)):
            y = int(rng.integers(20, 320))
            paste(frame, images[rng.integers(len(images))], x, y, 140)
            truths.append((x, y, 140, 140))
        t0 = time.perf_counter()
        faces = det.detect(frame)
        times.append(time.perf_counter() - t0)
        total += len(truths)
        found += sum(any(iou(t, f.box) > 0.5 for f in faces) for t in truths)
    return {"found": found, "faces": total, "ms_per_frame_p50": float(np.median(times) * 1000)}


def framing(det, rec, faceset, rng, max_angle):
    from fer_edge.detect import crop_face

    hits = {(m, a): 0 for m in MARGINS for a in (False, True)}
    detected = 0
    for img, label in zip(faceset.images, faceset.labels):
        frame = np.empty((480, 640, 3), np.uint8)
        frame[:] = rng.integers(60, 200, 3)
        paste(frame, img, int(rng.integers(20, 480)), int(rng.integers(20, 320)), 140,
              float(rng.uniform(-max_angle, max_angle)) if max_angle else 0.0)
        faces = det.detect(frame)
        if not faces:
            continue
        detected += 1
        for m, a in hits:
            pred = rec.predict(crop_face(frame, faces[0], margin=m, align=a))
            hits[(m, a)] += int(rec.labels.index(pred.label) == label)
    n = len(faceset.labels)
    return {"detected": detected, "n": n,
            "accuracy": {f"margin {m:+.2f}, {'aligned' if a else 'not aligned'}": v / n for (m, a), v in hits.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets",
                                                   "fer2013"))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--json", help="write the results as JSON")
    args = ap.parse_args()

    from fer_edge import Recognizer
    from fer_edge.data import load_image_folder
    from fer_edge.detect import DETECTORS, create_detector

    faceset = load_image_folder(os.path.join(args.data, "test"), limit_per_class=args.per_class)
    rec = Recognizer(threads=1)
    base = [rec.labels.index(p.label) for p in rec.predict_batch(list(faceset.images))]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpu_count": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "model": rec.describe()["model"],
              "accuracy_on_original_crops": float(np.mean(np.array(base) == faceset.labels)), "detectors": {}}
    print(f"{len(faceset.labels)} FER2013 test faces; accuracy on the original crops "
          f"{result['accuracy_on_original_crops'] * 100:.1f} %")
    for name, cls in DETECTORS.items():
        ok, why = cls.probe()
        if not ok:
            print(f"{name}: not usable ({why})")
            continue
        det = create_detector(name)
        r = {"detection": detection(det, faceset.images, np.random.default_rng(0))}
        d = r["detection"]
        print(f"{name}: found {d['found']}/{d['faces']} faces (IoU > 0.5), {d['ms_per_frame_p50']:.1f} ms per "
              "640x480 frame")
        for max_angle in (0, 20):
            f = framing(det, rec, faceset, np.random.default_rng(1), max_angle)
            r[f"framing_turned_{max_angle}deg"] = f
            print(f"  faces turned by up to {max_angle} deg: detected {f['detected']}/{f['n']}")
            for key, acc in f["accuracy"].items():
                print(f"    {key:28s} accuracy {acc * 100:.1f} %")
        result["detectors"][name] = r
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
