"""Live expressions from a webcam (or any video source), with per-face tracking, smoothing and fps.

    pip install -e ".[onnxruntime,video]"
    python examples/webcam.py                 # camera 0; a window if OpenCV has GUI support
    python examples/webcam.py synthetic:120   # a generated clip: no camera needed
    python examples/webcam.py clip.mp4 --out annotated.mp4 --smooth 0.7 --detect-every 10

The loop `fer-edge video` runs, written out from its public pieces so it can be adapted:
frames -> FaceStream (detect every Nth frame, follow faces in between, crop, align, recognise,
one track id and a moving average of probabilities per face) -> annotate. Calling
`Recognizer.predict_frame` instead would run the face detector on every frame, which costs most
of a frame's time (README, "Faces in frames and video").
"""

import argparse
import time

import fer_edge
from fer_edge.video import FaceStream, VideoConfig, annotate, iter_frames

ap = argparse.ArgumentParser()
ap.add_argument("source", nargs="?", default="0", help="camera index, video file, image folder or synthetic:N")
ap.add_argument("--out", help="also write the annotated frames to this .mp4/.avi")
ap.add_argument("--smooth", type=float, default=0.7, help="weight of the past in each face's average (0 = off)")
ap.add_argument("--detect-every", type=int, default=VideoConfig.detect_every,
                help="run the face detector on every Nth frame and follow faces in between (1 = every frame)")
ap.add_argument("--threads", type=int, default=None)
args = ap.parse_args()

rec = fer_edge.Recognizer(threads=args.threads)
stream = FaceStream(rec, VideoConfig(smoothing=args.smooth, detect_every=args.detect_every))
window, writer = None, None
started, n = time.perf_counter(), 0
for frame in iter_frames(args.source):
    record = stream(frame)
    n += 1
    fps = n / (time.perf_counter() - started)
    print(f"frame {record['frame']:5d}  {fps:5.1f} fps  {'detect' if record['detected'] else 'follow'}  "
          + "  ".join(f"#{f['track']} {f['smoothed']['label']} {f['smoothed']['score']:.2f}" for f in record["faces"]))
    shown = annotate(frame, record["faces"])
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
info = stream.describe()
print(f"{n} frames at {n / (time.perf_counter() - started):.1f} fps with {info['backend']} {info['precision']}; "
      f"detected on {info['frames_detected']} of them ({info['tracking']['policy']})")
