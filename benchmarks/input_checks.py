"""What the bad-input checks cost, on this machine (issue 21).

    OMP_NUM_THREADS=1 python benchmarks/input_checks.py [--runs 5] [--json benchmarks/input-checks.json]

1. The JPEG data check: fer_edge.jpeg_check's pure-Python walk of the entropy-coded data, against
   decoding the file with Pillow (LOAD_TRUNCATED_IMAGES=False, its default) and with OpenCV's
   imdecode, on real FER2013 faces (the packaged samples, 48x48) and on mosaics of them at camera
   sizes, baseline and progressive. A second column per decoder says whether it noticed damaged
   data (16 bytes flipped mid-scan): Pillow and OpenCV return an image without a word (OpenCV only
   prints libjpeg's warning on stderr), so a decoder cannot replace the walk, only be compared.
2. The bundle consistency check that Bundle.open now runs (fer_edge.bundle_check: stamps and graph
   interfaces of every artifact) against the sha256 pass it already did, per packaged bundle.
Medians of --runs calls, all in one process, so rows compare; absolute figures move with the load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import numpy as np


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _images():
    from PIL import Image

    from fer_edge.demo import sample_faces

    faces = [np.asarray(Image.open(p).convert("L")) for p in sample_faces()]
    yield "FER2013 sample 48x48 (as shipped)", open(sample_faces()[0], "rb").read()
    tiles = np.concatenate([np.concatenate(faces[i : i + 7], axis=1) for i in range(0, 21, 7)], axis=0)  # 144 x 336
    for w, h in ((640, 480), (1920, 1080), (4096, 4096)):
        mosaic = np.asarray(Image.fromarray(tiles).resize((w, h), Image.BILINEAR))
        for progressive in (False, True):
            buf = io.BytesIO()
            Image.fromarray(np.stack([mosaic, mosaic[::-1], 255 - mosaic], -1)).save(
                buf, format="JPEG", quality=90, progressive=progressive)
            yield f"mosaic {w}x{h} colour {'progressive' if progressive else 'baseline'} q90", buf.getvalue()


def _damaged(data: bytes) -> bytes:
    out = bytearray(data)
    sos = out.index(b"\xff\xda")
    start = sos + 20 + (len(out) - sos - 40) // 3
    for k in range(16):
        out[start + k] ^= 0x5A
    return bytes(out)


def jpeg_rows(runs: int) -> list[dict]:
    from PIL import Image

    from fer_edge.jpeg_check import check_jpeg

    try:
        import cv2
    except ImportError:
        cv2 = None
    try:  # libjpeg-turbo with its warnings as errors (strict=True): not a dependency, measured where installed
        import simplejpeg
    except ImportError:
        simplejpeg = None

    def strict(data):
        try:
            simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
        except ValueError as e:
            return str(e)
        return ""

    def pillow(data):
        with Image.open(io.BytesIO(data)) as im:
            im.load()

    def opencv(data):
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def noticed(decode, data) -> bool:
        try:
            return decode(data) is None if decode is opencv else bool(decode(data))
        except Exception:
            return True

    rows = []
    for name, data in _images():
        bad = _damaged(data)
        row = {"image": name, "kbytes": round(len(data) / 1024, 1),
               "walk_ms": _median_ms(lambda: check_jpeg(data), runs), "walk_noticed": bool(check_jpeg(bad)),
               "pillow_ms": _median_ms(lambda: pillow(data), runs), "pillow_noticed": noticed(pillow, bad)}
        if cv2 is not None:
            row.update(opencv_ms=_median_ms(lambda: opencv(data), runs), opencv_noticed=noticed(opencv, bad))
        if simplejpeg is not None:
            row.update(simplejpeg_strict_ms=_median_ms(lambda: strict(data), runs), simplejpeg_noticed=bool(strict(bad)))
        rows.append(row)
        print(f"{name:42s} {row['kbytes']:8.1f} KB  walk {row['walk_ms']:9.2f} ms ({row['walk_noticed']})  "
              f"pillow {row['pillow_ms']:8.2f} ms ({row['pillow_noticed']})"
              + (f"  opencv {row['opencv_ms']:8.2f} ms ({row['opencv_noticed']})" if cv2 is not None else "")
              + (f"  simplejpeg strict {row['simplejpeg_strict_ms']:8.2f} ms ({row['simplejpeg_noticed']})"
                 if simplejpeg is not None else ""), flush=True)
    if simplejpeg is not None:
        rows.append(agreement(check_jpeg, strict))
    return rows


def agreement(walk, strict, per_file: int = 10) -> dict:
    """One random byte changed in the scan data of each sample face (160x160, baseline and progressive),
    `per_file` times: how often the walk and libjpeg's warnings each notice."""
    from PIL import Image

    from fer_edge.demo import sample_faces

    rng = np.random.default_rng(0)
    counts = {"files": 0, "both": 0, "walk_only": 0, "libjpeg_only": 0, "neither": 0}
    for p in sample_faces():
        img = np.asarray(Image.open(p).convert("L").resize((160, 160)))
        for progressive in (False, True):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=85, progressive=progressive)
            clean = buf.getvalue()
            for _ in range(per_file):
                x = bytearray(clean)
                k = int(rng.integers(x.index(b"\xff\xda") + 20, len(x) - 20))
                x[k] ^= int(rng.integers(1, 256))
                w, s = bool(walk(bytes(x))), bool(strict(bytes(x)))
                counts["files"] += 1
                counts["both" if w and s else "walk_only" if w else "libjpeg_only" if s else "neither"] += 1
    print(f"one random byte changed: {counts}", flush=True)
    return {"image": "agreement: sample faces 160x160, one byte changed", **counts}


def bundle_rows(runs: int) -> list[dict]:
    from fer_edge.bundle import Bundle, packaged_models
    from fer_edge.bundle_check import check_bundle

    rows = []
    for name in packaged_models():
        b = Bundle.open(name, verify=False)
        row = {"bundle": name, "hash_ms": _median_ms(b.verify_files, runs),
               "check_ms": _median_ms(lambda: check_bundle(b), runs)}
        rows.append(row)
        print(f"bundle {name:6s} sha256 of every file {row['hash_ms']:7.2f} ms   consistency check "
              f"{row['check_ms']:7.2f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()
    from fer_edge.runtimes.machine import cpu_model

    jpeg, bundles = jpeg_rows(args.runs), bundle_rows(args.runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
                       "python": platform.python_version(), "load": os.getloadavg(), "runs": args.runs,
                       "jpeg": jpeg, "bundles": bundles}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
