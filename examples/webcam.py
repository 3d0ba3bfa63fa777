"""Live expressions from a webcam (or any video source), with per-face smoothing and fps.

    pip install -e ".[onnxruntime,video]"
    python examples/webcam.py                 # camera 0; a window if OpenCV has GUI support
    python examples/webcam.py synthetic:120   # a generated clip: no camera needed
    python examples/webcam.py clip.mp4 --out annotated.mp4 --smooth 0.7

The same loop `fer-edge video` runs (fer_edge.video.run_video), written out from its public
pieces so it can be adapted: frames -> Recognizer.predict_frame (detect, crop, align, recognise)
-> IouTracker (one id and a moving average of probabilities per face) -> annotate.
"""

import argparse
import time

import fer_edge
from fer_edge.video import IouTracker, annotate, iter_frames

ap = argparse.ArgumentParser()
ap.add_argument("source", nargs="?", default="0", help="camera index, video file, image folder or synthetic:N")
ap.add_argument("--out", help="also write the annotated frames to this .mp4/.avi")
ap.add_argument("--smooth", type=float, default=0.7, help="weight of the past in each face's average (0 = off)")
ap.add_argument("--threads", type=int, default=None)
args = ap.parse_args()

rec = fer_edge.Recognizer(threads=args.threads)
tracker = IouTracker(smoothing=args.smooth)
window, writer = None, None
started, n = time.perf_counter(), 0
for i, frame in enumerate(iter_frames(args.source)):
    results = rec.predict_frame(frame)
    tracks = tracker.update(i, [r.box for r in results], [r.prediction.probs for r in results])
    faces = []
    for r, t in zip(results, tracks):
        best = int(t.probs.argmax())
        faces.append({"track": t.id, "box": r.box, "label": rec.labels[best], "score": float(t.probs[best])})
    n += 1
    fps = n / (time.perf_counter() - started)
    print(f"frame {i:5d}  {fps:5.1f} fps  " + "  ".join(f"#{f['track']} {f['label']} {f['score']:.2f}" for f in faces))
    shown = annotate(frame, faces)
    if args.out:
        import cv2

        if writer is None:
            writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, shown.shape[1::-1])
        writer.write(shown)
    if window is not False:
        import cv2

        try:  # the headless wheel has no GUI: keep printing instead
            cv2.imshow("fer_edge", shown)
            window = True
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                break
        except cv2.error:
            window = False
if writer is not None:
    writer.release()
print(f"{n} frames at {n / (time.perf_counter() - started):.1f} fps with {rec.describe()['backend']} "
      f"{rec.describe()['precision']}")
