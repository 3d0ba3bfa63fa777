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

from .errors import DataError, InputError, RuntimeUnavailableError, install_hint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SYNTHETIC_PREFIX = "synthetic:"  # e.g. "synthetic:60": a generated clip, no camera or file needed


@dataclass(frozen=True)
class VideoConfig:
    """Settings of `run_video`. smoothing: weight of the past in each track's moving average of
    probabilities (0 = off, 0.7 = steady webcam labels); iou: least box overlap that continues a
    track; max_age: frames a track survives unseen; margin None = the detector's own.
    detect_every: run the face detector on every Nth frame and follow the faces in between
    (`FaceFollower`; 1 = detect on every frame); a frame is detected at once when a followed
    face's match falls below redetect_below (normalised correlation), e.g. when it turns away.
    min_face: the detector's smallest face in frame pixels (None: the detector's default)."""

    detector: str = "auto"
    margin: float | None = None
    align: bool = True
    smoothing: float = 0.0
    iou: float = 0.3
    max_age: int = 10
    max_frames: int | None = None
    detect_every: int = 10
    redetect_below: float = 0.6
    min_face: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.detect_every, int) or isinstance(self.detect_every, bool) or self.detect_every < 1:
            raise InputError(f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        if not -1.0 <= self.redetect_below <= 1.0:
            raise InputError(f"redetect_below must be within [-1, 1] (a correlation), got {self.redetect_below}")
        if not 0.0 <= self.smoothing < 1.0:
            raise InputError(f"smoothing must be within [0, 1), got {self.smoothing}")
        if not 0.0 < self.iou <= 1.0:
            raise InputError(f"iou must be within (0, 1], got {self.iou}")
        if self.min_face is not None and (not isinstance(self.min_face, int) or self.min_face < 8):
            raise InputError(f"min_face must be an integer >= 8 (frame pixels) or None, got {self.min_face!r}")
        if self.max_age < 0 or (self.max_frames is not None and self.max_frames < 1):
            raise InputError(f"max_age must be >= 0 and max_frames >= 1, got {self.max_age}, {self.max_frames}")


    def describe(self) -> dict[str, Any]:
        """The detect/follow policy in words and numbers (run_video's summary carries it)."""
        policy = ("detect on every frame" if self.detect_every == 1 else
                  f"detect every {self.detect_every} frames, follow faces in between by template matching; "
                  f"detect at once when a followed face's match falls below {self.redetect_below}")
        return {"detect_every": self.detect_every, "redetect_below": self.redetect_below, "policy": policy,
                "iou": self.iou, "max_age": self.max_age}


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
                                      f"install it with: {install_hint('video')}") from e
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

    def follow(self, frame_index: int, ids: list[int], probs: list[np.ndarray], boxes: list) -> list[Track]:
        """Continue known tracks with boxes found by following rather than detecting."""
        out = []
        for tid, p, box in zip(ids, probs, boxes):
            t = self.tracks[tid]
            t.probs = (self.smoothing * t.probs + (1 - self.smoothing) * np.asarray(p, np.float32)).astype(np.float32)
            t.box, t.last_seen, t.hits = tuple(box), frame_index, t.hits + 1
            out.append(t)
        return out


class FaceFollower:
    """Follows faces between detections: each face's gray patch at its last detection, shrunk to
    SIDE x SIDE, is matched by normalised cross-correlation over a window around its last box
    (SEARCH of the side on every side). The box moves by the best offset and keeps its size; the
    template stays the detected one, so following does not drift between detections. numpy only
    (about 0.3 ms a face).
    """

    SIDE = 24
    SEARCH = 0.5

    def __init__(self) -> None:
        self._templates: dict[int, np.ndarray] = {}

    def reset(self, frame: np.ndarray, faces_by_track: dict[int, Any]) -> None:
        """Take new templates from a detected frame: {track id: Face}."""
        self._templates = {tid: _region(frame, self._square(f).box, 0.0, self.SIDE)
                           for tid, f in faces_by_track.items()}

    def follow(self, frame: np.ndarray, faces_by_track: dict[int, Any]) -> dict[int, tuple[Any, float]]:
        """{track id: (moved Face, correlation)} for the tracks that have a template."""
        from .detect import Face

        out = {}
        for tid, face in faces_by_track.items():
            tpl = self._templates.get(tid)
            if tpl is None:
                continue
            sq = self._square(face)
            side = sq.box[2]
            wide = side + 2 * int(round(side * self.SEARCH))  # the region _region cuts
            n = int(round(self.SIDE * (1 + 2 * self.SEARCH)))
            region = _region(frame, sq.box, self.SEARCH, n)
            dy, dx, corr = _best_offset(region, tpl)
            step = wide / n  # frame pixels per patch pixel
            ox, oy = (dx - (n - self.SIDE) / 2) * step, (dy - (n - self.SIDE) / 2) * step
            x, y, w, h = face.box
            marks = None if face.landmarks is None else (face.landmarks + np.float32([ox, oy])).astype(np.float32)
            out[tid] = (Face((int(round(x + ox)), int(round(y + oy)), w, h), face.score, marks), corr)
        return out

    @staticmethod
    def _square(face):
        from .detect import Face

        x, y, w, h = face.box
        side = max(w, h)
        return Face((int(round(x + (w - side) / 2)), int(round(y + (h - side) / 2)), side, side), face.score, None)


def _region(frame: np.ndarray, box, margin: float, n: int) -> np.ndarray:
    """The square `box` plus `margin` of its side on every side, gray, as n x n float32 (edge
    pixels repeated beyond the frame). Shrunk before it is made gray: converting a big face's
    full-size window costs more than the match."""
    from .detect import shrink
    from .preprocess import resize, to_gray

    x, y, side, _ = box
    pad = int(round(side * margin))
    x0, y0, x1, y1 = x - pad, y - pad, x + side + pad, y + side + pad
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((n, n), np.float32)  # wholly outside the frame: nothing to match
    part = frame[cy0:cy1, cx0:cx1]
    edges = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)) + (((0, 0),) if part.ndim == 3 else ())
    part = np.pad(part, edges, mode="edge")
    if part.shape[0] > n:
        part = shrink(np.ascontiguousarray(part), part.shape[0] / n)
    gray = to_gray(part, what="frame")
    return gray.astype(np.float32) if gray.shape == (n, n) else resize(gray, (n, n), "bilinear")


def _best_offset(region: np.ndarray, tpl: np.ndarray) -> tuple[int, int, float]:
    """(row, column, correlation) of the best zero-mean normalised match of tpl inside region:
    OpenCV's TM_CCOEFF_NORMED when cv2 imports (the same figures, several times faster), else numpy."""
    from .detect import _cv2_or_none

    cv2 = _cv2_or_none()
    if cv2 is not None:
        corr = cv2.matchTemplate(region.astype(np.float32), tpl.astype(np.float32), cv2.TM_CCOEFF_NORMED)
        _, best, _, (c, r) = cv2.minMaxLoc(corr)
        return int(r), int(c), float(best)
    th, tw = tpl.shape
    t = tpl - tpl.mean()
    t_norm = float(np.sqrt((t * t).sum())) or 1.0
    win = np.lib.stride_tricks.sliding_window_view(region, tpl.shape)  # (R, C, th, tw), no copy
    cross = np.einsum("rcij,ij->rc", win, t)  # t has zero mean, so the windows' means drop out
    ii = np.pad(np.cumsum(np.cumsum(np.stack([region, region * region]).astype(np.float64), 1), 2),
                ((0, 0), (1, 0), (1, 0)))  # integral images: every window's sum and sum of squares at once
    box = ii[:, th:, tw:] - ii[:, :-th, tw:] - ii[:, th:, :-tw] + ii[:, :-th, :-tw]
    var = np.maximum(box[1] - box[0] * box[0] / tpl.size, 1e-6)
    corr = cross / (np.sqrt(var) * t_norm)
    r, c = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(r), int(c), float(corr[r, c])


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

class FaceStream:
    """One frame at a time: detect (every `detect_every` frames, or sooner when a followed face is
    lost), follow faces in between, recognise each face and keep its track. What `run_video` runs
    on every frame, for callers that own their loop (a webcam app, a frame server):

        stream = FaceStream(Recognizer(threads=1))
        for frame in camera:
            record = stream(frame)  # {"frame", "detected", "faces": [...], "ms": {...}}

    Calling `Recognizer.predict_frame` in such a loop detects on every frame; a stream detects on
    one frame in `detect_every` and costs a template match per face on the others.
    A recognizer may be passed in, else one is made from model/backend/precision/threads.
    """

    def __init__(self, recognizer=None, config: VideoConfig | None = None, *, model: str | os.PathLike | None = None,
                 backend: str = "auto", precision: str = "auto", threads: int | None = None) -> None:
        from .detect import create_detector, crop_side_for, detector_for
        from .recognizer import Recognizer

        self.config = cfg = config or VideoConfig()
        if not isinstance(cfg, VideoConfig):
            raise InputError(f"config is a {type(cfg).__name__}; expected a fer_edge.video.VideoConfig")
        self.recognizer = rec = recognizer if recognizer is not None else \
            Recognizer(model, backend, precision=precision, threads=threads)
        if cfg.min_face is None:
            self.detector = detector_for(rec, cfg.detector)
        else:
            t = getattr(rec, "threads", None)
            self.detector = create_detector(cfg.detector, min_face=cfg.min_face, **({"threads": t} if t is not None else {}))
        self.margin = self.detector.margin if cfg.margin is None else cfg.margin
        self._crop_side = crop_side_for(rec)
        self.tracker = IouTracker(iou=cfg.iou, max_age=cfg.max_age, smoothing=cfg.smoothing)
        self._follower = FaceFollower()
        self._followed: dict[int, Any] = {}  # track id -> its Face in the last frame
        self._last_detected = -cfg.detect_every
        self.frames = self.faces = self.frames_detected = 0
        self.seconds = {"detect": 0.0, "recognize": 0.0}

    def __call__(self, frame: np.ndarray, name: str | None = None) -> dict[str, Any]:
        """The record of one frame: {"frame", "source", "detected", "faces": [{track, box, score,
        landmarks, label, score, probs, smoothed}], "ms": {detect, recognize, total}}."""
        from .detect import _check_frame, crop_face

        cfg, rec, index = self.config, self.recognizer, self.frames
        _check_frame(frame)  # a followed frame must be refused as a detected one would be
        t0 = time.perf_counter()
        faces, detected = None, False
        if index - self._last_detected < cfg.detect_every:
            moved = self._follower.follow(frame, self._followed)
            if all(corr >= cfg.redetect_below for _, corr in moved.values()):
                ids = list(moved)
                faces = [moved[i][0] for i in ids]
        if faces is None:
            faces, detected, self._last_detected = self.detector.detect(frame), True, index
        t1 = time.perf_counter()
        crops = [crop_face(frame, f, margin=self.margin, align=cfg.align, max_side=self._crop_side) for f in faces]
        preds = rec.predict_batch(crops) if crops else []
        if detected:
            tracks = self.tracker.update(index, [f.box for f in faces], [p.probs for p in preds])
            self._followed = {t.id: f for t, f in zip(tracks, faces)}
            if cfg.detect_every > 1:
                self._follower.reset(frame, self._followed)
        else:
            tracks = self.tracker.follow(index, ids, [p.probs for p in preds], [f.box for f in faces])
            self._followed = dict(zip(ids, faces))
        t2 = time.perf_counter()
        records = []
        for f, p, t in zip(faces, preds, tracks):
            best = int(np.argmax(t.probs))
            records.append({"track": t.id, **f.as_dict(), **p.as_dict(),
                            "smoothed": {"label": rec.labels[best], "score": round(float(t.probs[best]), 6),
                                         "probs": {n: round(float(v), 6) for n, v in zip(rec.labels, t.probs)}}})
        self.seconds["detect"] += t1 - t0
        self.seconds["recognize"] += t2 - t1
        self.frames += 1
        self.faces += len(records)
        self.frames_detected += detected
        return {"frame": index, "source": name if name is not None else f"frame#{index}", "detected": detected,
                "faces": records, "ms": {"detect": round((t1 - t0) * 1000, 3), "recognize": round((t2 - t1) * 1000, 3),
                                         "total": round((t2 - t0) * 1000, 3)}}

    def describe(self) -> dict[str, Any]:
        """The stream's settings and counts so far (run_video's summary carries them)."""
        rec, n = self.recognizer, max(self.frames, 1)
        busy = sum(self.seconds.values())
        return {"frames": self.frames, "faces": self.faces, "tracks": self.tracker._next_id - 1,
                "frames_detected": self.frames_detected,
                "processing_fps": round(self.frames / busy, 2) if busy > 0 else None,
                "ms_per_frame": {k: round(v / n * 1000, 3) for k, v in self.seconds.items()},
                "detector": self.detector.describe(), "tracking": self.config.describe(),
                "model": rec.describe()["model"], "backend": rec.backend, "precision": rec.precision,
                "config": asdict(self.config)}


def run_video(source: Any, recognizer=None, *, config: VideoConfig | None = None, out: str | os.PathLike | None = None,
              on_frame: Callable[[dict[str, Any]], None] | None = None, model: str | os.PathLike | None = None,
              backend: str = "auto", precision: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Detect, recognise and track faces in every frame of `source` (see `open_source`) through
    one `FaceStream`.

    Calls `on_frame(record)` per frame (the stream's record); writes an annotated video to `out`
    (.mp4/.avi); returns a summary with frames, faces, tracks and fps.
    A recognizer may be passed in, else one is made from model/backend/precision/threads.
    """
    stream = FaceStream(recognizer, config, model=model, backend=backend, precision=precision, threads=threads)
    cfg = stream.config
    src = open_source(source)
    writer = _Writer(Path(out), src.fps) if out is not None else None
    started = time.perf_counter()
    try:
        for index, (name, frame) in enumerate(src.frames):
            if cfg.max_frames is not None and index >= cfg.max_frames:
                break
            record = stream(frame, name)
            if writer is not None:
                writer.write(annotate(frame, record["faces"]))
            if on_frame is not None:
                on_frame(record)
    finally:
        src.close()
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started
    info = stream.describe()
    return {"frames": info["frames"], "faces": info["faces"], "tracks": info["tracks"], "source": src.kind,
            "frames_detected": info["frames_detected"], "seconds": round(wall, 3),
            "fps": round(info["frames"] / wall, 2) if wall > 0 else None, "processing_fps": info["processing_fps"],
            "ms_per_frame": info["ms_per_frame"], "out": None if out is None else str(out),
            **{k: info[k] for k in ("detector", "tracking", "model", "backend", "precision", "config")}}


def iter_frames(source: Any) -> Iterable[np.ndarray]:
    """Just the frames of a source (for callers that run their own loop, e.g. examples/webcam.py)."""
    src = open_source(source)
    try:
        for _, frame in src.frames:
            yield frame
    finally:
        src.close()
