"""Expressions over time: frames from a file, a camera, an image folder or a generator, faces
found and recognised in each, tracked across frames, optionally smoothed, annotated and timed.

`run_video` is the one entry point (`fer-edge video` calls it). Faces are tracked by box overlap
(greedy IoU matching, the simplest tracker that holds a face still in a webcam or a desk clip);
each track keeps an exponential moving average of its probabilities, so a label does not flicker
between frames when `smoothing` > 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import DataError, InputError, RuntimeUnavailableError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SYNTHETIC_PREFIX = "synthetic:"  # e.g. "synthetic:60": a generated clip, no camera or file needed


@dataclass(frozen=True)
class VideoConfig:
    """Settings of `run_video`. smoothing: weight of the past in each track's moving average of
    probabilities (0 = off, 0.7 = steady webcam labels); iou: least box overlap that continues a
    track; max_age: frames a track survives unseen; margin None = the detector's own."""

    detector: str = "auto"
    margin: float | None = None
    align: bool = True
    smoothing: float = 0.0
    iou: float = 0.3
    max_age: int = 10
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise InputError(f"smoothing must be within [0, 1), got {self.smoothing}")
        if not 0.0 < self.iou <= 1.0:
            raise InputError(f"iou must be within (0, 1], got {self.iou}")
        if self.max_age < 0 or (self.max_frames is not None and self.max_frames < 1):
            raise InputError(f"max_age must be >= 0 and max_frames >= 1, got {self.max_age}, {self.max_frames}")


# ---------------------------------------------------------------- sources

@dataclass
class Source:
    """An iterator of (name, BGR or gray uint8 frame) with the frame rate to write at."""

    frames: Iterator[tuple[str, np.ndarray]]
    kind: str
    fps: float = 25.0
    close: Callable[[], None] = field(default=lambda: None)


def _cv2():
    try:
        import cv2
    except Exception as e:
        raise RuntimeUnavailableError(f"video files and cameras need OpenCV ({e}); "
                                      "install it with: pip install 'fer-edge[video]'") from e
    return cv2


def _capture(cv2, cap, label: str) -> Iterator[tuple[str, np.ndarray]]:
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield f"{label}#{i}", frame
        i += 1


def open_source(source: Any) -> Source:
    """A camera index (int or digits), a video file, an image folder, "synthetic:N", or an
    iterable of uint8 frames."""
    if isinstance(source, (str, os.PathLike, int)):
        text = os.fspath(source) if not isinstance(source, int) else str(source)
        if text.startswith(SYNTHETIC_PREFIX):
            n = text[len(SYNTHETIC_PREFIX):] or "60"
            if not n.isdigit() or int(n) < 1:
                raise InputError(f"{text!r}: expected {SYNTHETIC_PREFIX}N with N a positive frame count")
            return Source(((f"synthetic#{i}", f) for i, f in enumerate(synthetic_clip(int(n)))), "synthetic")
        if text.isdigit():
            cv2 = _cv2()
            cap = cv2.VideoCapture(int(text))
            if not cap.isOpened():
                raise DataError(f"camera {text} could not be opened (no such device, or it is busy)")
            return Source(_capture(cv2, cap, f"camera{text}"), "camera", cap.get(cv2.CAP_PROP_FPS) or 25.0, cap.release)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"image folder {path} holds no images (suffixes {IMAGE_SUFFIXES})")
            return Source(_folder_frames(files), "folder")
        if not path.is_file():
            raise DataError(f"video source not found: {path} (expected a video file, an image folder, a camera "
                            f"index such as 0, or {SYNTHETIC_PREFIX}N)")
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"OpenCV cannot open {path} as a video")
        return Source(_capture(cv2, cap, path.name), "file", cap.get(cv2.CAP_PROP_FPS) or 25.0, cap.release)
    if isinstance(source, np.ndarray) and source.ndim in (2, 3) and source.dtype == np.uint8:
        source = [source]
    try:
        iterator = iter(source)
    except TypeError:
        raise InputError(f"video source is a {type(source).__name__}; expected a path, a camera index, "
                         f"{SYNTHETIC_PREFIX}N or an iterable of uint8 frames") from None
    return Source(((f"frame#{i}", f) for i, f in enumerate(iterator)), "frames")


def _folder_frames(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    from .data import read_image

    for p in files:
        yield p.name, read_image(p)


def synthetic_clip(n_frames: int = 60, size: tuple[int, int] = (360, 480), face_px: int = 140,
                   sample: int = 9) -> Iterator[np.ndarray]:
    """A BGR clip of one packaged sample face (FER2013 test) gliding across a plain background:
    something to run the video path on with no camera, file or OpenCV."""
    from .data import read_image
    from .demo import sample_faces
    from .preprocess import resize

    faces = sample_faces()
    face = read_image(faces[sample % len(faces)])
    big = np.clip(np.rint(resize(face, (face_px, face_px), "bilinear")), 0, 255).astype(np.uint8)
    h, w = size
    if face_px + 2 > min(h, w):
        raise InputError(f"face_px {face_px} does not fit a {w}x{h} frame")
    span = w - face_px - 2
    for i in range(n_frames):
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = (120, 130, 140)
        x = 1 + int(round(span * i / max(1, n_frames - 1)))
        y = (h - face_px) // 2
        frame[y:y + face_px, x:x + face_px] = big[:, :, None]
        yield frame


# ---------------------------------------------------------------- tracking

def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]
    probs: np.ndarray  # smoothed
    last_seen: int
    hits: int = 1


class IouTracker:
    """Greedy IoU matching of this frame's boxes to live tracks; each track smooths its probabilities."""

    def __init__(self, *, iou: float = 0.3, max_age: int = 10, smoothing: float = 0.0) -> None:
        self.iou, self.max_age, self.smoothing = iou, max_age, smoothing
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, frame_index: int, boxes: list, probs: list[np.ndarray]) -> list[Track]:
        """One Track per box, in the order given."""
        pairs = sorted(((box_iou(t.box, b), tid, j) for tid, t in self.tracks.items() for j, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for overlap, tid, j in pairs:
            if overlap < self.iou:
                break
            if tid in used or j in assigned:
                continue
            assigned[j] = tid
            used.add(tid)
        out = []
        for j, (box, p) in enumerate(zip(boxes, probs)):
            p = np.asarray(p, dtype=np.float32)
            if j in assigned:
                t = self.tracks[assigned[j]]
                t.probs = (self.smoothing * t.probs + (1 - self.smoothing) * p).astype(np.float32)
                t.box, t.last_seen, t.hits = tuple(box), frame_index, t.hits + 1
            else:
                t = Track(self._next_id, tuple(box), p.copy(), frame_index)
                self.tracks[t.id] = t
                self._next_id += 1
            out.append(t)
        for tid in [tid for tid, t in self.tracks.items() if frame_index - t.last_seen > self.max_age]:
            del self.tracks[tid]
        return out


# ---------------------------------------------------------------- output

def annotate(frame: np.ndarray, faces: list[dict[str, Any]]) -> np.ndarray:
    """A BGR copy of `frame` with each face's box, track id and (smoothed) label drawn on it."""
    cv2 = _cv2()
    img = frame.copy() if frame.ndim == 3 and frame.shape[2] == 3 else \
        cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_BGRA2BGR)
    for f in faces:
        x, y, w, h = f["box"]
        shown = f.get("smoothed", f)
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 200, 0), 2)
        text = f"#{f['track']} {shown['label']} {shown['score']:.2f}"
        cv2.putText(img, text, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 0), 1, cv2.LINE_AA)
    return img


class _Writer:
    FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}

    def __init__(self, path: Path, fps: float) -> None:
        if path.suffix.lower() not in self.FOURCC:
            raise InputError(f"--out {path}: the suffix must be one of {sorted(self.FOURCC)}")
        self.path, self.fps, self._w = path, fps, None

    def write(self, img: np.ndarray) -> None:
        cv2 = _cv2()
        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = img.shape[:2]
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()]),
                                      self.fps, (w, h))
            if not self._w.isOpened():
                raise RuntimeUnavailableError(f"OpenCV cannot write {self.path} (no encoder for this format here)")
        self._w.write(img)

    def close(self) -> None:
        if self._w is not None:
            self._w.release()


# ---------------------------------------------------------------- the loop

def run_video(source: Any, recognizer=None, *, config: VideoConfig | None = None, out: str | os.PathLike | None = None,
              on_frame: Callable[[dict[str, Any]], None] | None = None, model: str | os.PathLike | None = None,
              backend: str = "auto", precision: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Detect, recognise and track faces in every frame of `source` (see `open_source`).

    Calls `on_frame(record)` per frame with {"frame", "source", "ms": {detect, recognize, total},
    "faces": [{track, box, score, landmarks, label, score, probs, smoothed}]}; writes an
    annotated video to `out` (.mp4/.avi); returns a summary with frames, faces, tracks and fps.
    A recognizer may be passed in, else one is made from model/backend/precision/threads.
    """
    from .detect import crop_face, detector_for
    from .recognizer import Recognizer

    cfg = config or VideoConfig()
    rec = recognizer if recognizer is not None else Recognizer(model, backend, precision=precision, threads=threads)
    det = detector_for(rec, cfg.detector)
    margin = det.margin if cfg.margin is None else cfg.margin
    src = open_source(source)
    writer = _Writer(Path(out), src.fps) if out is not None else None
    tracker = IouTracker(iou=cfg.iou, max_age=cfg.max_age, smoothing=cfg.smoothing)
    n_frames = n_faces = 0
    stage = {"detect": 0.0, "recognize": 0.0}
    started = time.perf_counter()
    try:
        for index, (name, frame) in enumerate(src.frames):
            if cfg.max_frames is not None and index >= cfg.max_frames:
                break
            t0 = time.perf_counter()
            faces = det.detect(frame)
            t1 = time.perf_counter()
            crops = [crop_face(frame, f, margin=margin, align=cfg.align) for f in faces]
            preds = rec.predict_batch(crops) if crops else []
            tracks = tracker.update(index, [f.box for f in faces], [p.probs for p in preds])
            t2 = time.perf_counter()
            records = []
            for f, p, t in zip(faces, preds, tracks):
                best = int(np.argmax(t.probs))
                records.append({"track": t.id, **f.as_dict(), **p.as_dict(),
                                "smoothed": {"label": rec.labels[best], "score": round(float(t.probs[best]), 6),
                                             "probs": {n: round(float(v), 6) for n, v in zip(rec.labels, t.probs)}}})
            stage["detect"] += t1 - t0
            stage["recognize"] += t2 - t1
            n_frames += 1
            n_faces += len(records)
            record = {"frame": index, "source": name, "faces": records,
                      "ms": {"detect": round((t1 - t0) * 1000, 3), "recognize": round((t2 - t1) * 1000, 3),
                             "total": round((t2 - t0) * 1000, 3)}}
            if writer is not None:
                writer.write(annotate(frame, records))
            if on_frame is not None:
                on_frame(record)
    finally:
        src.close()
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started
    busy = stage["detect"] + stage["recognize"]
    return {"frames": n_frames, "faces": n_faces, "tracks": tracker._next_id - 1, "source": src.kind,
            "seconds": round(wall, 3), "fps": round(n_frames / wall, 2) if wall > 0 else None,
            "processing_fps": round(n_frames / busy, 2) if busy > 0 else None,
            "ms_per_frame": {k: round(v / max(n_frames, 1) * 1000, 3) for k, v in stage.items()},
            "out": None if out is None else str(out), "detector": det.describe(), "model": rec.describe()["model"],
            "backend": rec.backend, "precision": rec.precision, "config": asdict(cfg)}


def iter_frames(source: Any) -> Iterable[np.ndarray]:
    """Just the frames of a source (for callers that run their own loop, e.g. examples/webcam.py)."""
    src = open_source(source)
    try:
        for _, frame in src.frames:
            yield frame
    finally:
        src.close()
