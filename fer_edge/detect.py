"""Faces in frames: find faces, crop them, level the eyes, recognise each one.

The default detector is **YuNet through `yuface`** (BSD; one 475 KB wheel, numpy its only
dependency, with the network compiled in), chosen by measurement:

- It works right after `pip install 'fer-edge[video]'` with no download. OpenCV's own YuNet
  (`cv2.FaceDetectorYN`) needs an ONNX file that no pip package ships, and OpenCV 5 wheels no
  longer ship the Haar cascades (the `video` extra pins OpenCV below 5 for the `haar` option).
- It finds more faces: on 10 frames of 640x480 holding three FER2013 test faces each, pasted at
  140 px, YuNet found 24 of 30 (IoU > 0.5) and the Haar cascade 19 of 30; of 280 single test
  faces it found 263 and Haar 208 (`OMP_NUM_THREADS=1 python benchmarks/faces.py`, 2026-11-21,
  the project's 2-core CPU machine; both took 150-200 ms per frame there under a load of 6).
- It gives five landmarks, so crops can be aligned by the eyes; Haar gives boxes only.

yuface publishes wheels for x86-64 CPython 3.8-3.11 only, so the `video` extra installs it only
there; elsewhere (Jetson/aarch64, Python 3.12+) `detector="auto"` uses `haar`. Third-party
detectors register with `register_detector`. Cropping and alignment are numpy only: one bilinear
sampler serves the plain crop and the eye-levelling rotation, and repeats the edge pixels for
faces cut by the frame's edge.
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import InputError, RuntimeUnavailableError
from .preprocess import to_gray
from .types import Prediction

YUNET_MAX_SIDE = 960  # libfacedetection's tested input limit; larger frames are scaled down first


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixels. `landmarks` is (5, 2) float32 (both eyes, nose tip,
    both mouth corners, in the detector's order) or None when the detector gives none."""

    box: tuple[int, int, int, int]  # x, y, width, height
    score: float
    landmarks: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "detection_score": round(self.score, 4),
                "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist()}


@dataclass(frozen=True)
class FaceResult:
    """A face found in a frame and the expression recognised in its crop."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray | None
    score: float  # detector confidence
    prediction: Prediction
    crop: np.ndarray | None = field(default=None, repr=False)  # the gray crop the recogniser saw

    def as_dict(self) -> dict[str, Any]:
        return {**Face(self.box, self.score, self.landmarks).as_dict(), **self.prediction.as_dict()}


class Detector(abc.ABC):
    """Finds faces in a uint8 frame (HxW gray, HxWx3 BGR or HxWx4 BGRA)."""

    name: ClassVar[str]
    extra: ClassVar[str] = "video"  # the pip extra that installs it
    margin: ClassVar[float] = 0.0  # crop margin that best reproduces FER2013's framing from this detector's boxes

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> tuple[bool, str]:
        """(usable, why): whether this detector can run here."""

    @abc.abstractmethod
    def detect(self, frame: np.ndarray) -> list[Face]: ...

    def describe(self) -> dict[str, Any]:
        return {"detector": self.name}


DETECTORS: dict[str, type[Detector]] = {}
AUTO_ORDER = ("yunet", "haar")


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its name (third-party detectors too)."""
    DETECTORS[cls.name] = cls
    return cls


def _check_frame(frame: Any) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) \
            or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)) or min(frame.shape[:2]) < 1:
        what = f"{type(frame).__name__}" if not isinstance(frame, np.ndarray) else f"{frame.dtype} {frame.shape}"
        raise InputError(f"frame is {what}; expected a uint8 numpy array HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA)")
    return frame


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return np.ascontiguousarray(frame[:, :, :3])


@register_detector
class YuNetDetector(Detector):
    """YuNet (libfacedetection) through the `yuface` wheel: boxes, scores and 5 landmarks."""

    name = "yunet"
    margin = -0.05  # best of the margins measured by benchmarks/faces.py

    def __init__(self, *, min_score: float = 0.5) -> None:
        ok, why = self.probe()
        if not ok:
            raise RuntimeUnavailableError(f"detector 'yunet': {why}")
        if not 0.0 <= min_score <= 1.0:
            raise InputError(f"min_score must be within [0, 1], got {min_score}")
        import yuface

        self._detect = yuface.c_detect  # the raw call: the wrapper's uint16 claim hides negative coordinates
        self.min_score = min_score

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import yuface  # noqa: F401
        except Exception as e:  # ImportError, or a broken native library (OSError)
            return False, (f"cannot import yuface ({e}); install it with: pip install 'fer-edge[video]' "
                           "(wheels for x86-64 CPython 3.8-3.11 only; elsewhere use detector='haar')")
        return True, "yuface (YuNet, libfacedetection)"

    def detect(self, frame: np.ndarray) -> list[Face]:
        bgr = _to_bgr(_check_frame(frame))
        scale = max(bgr.shape[:2]) / YUNET_MAX_SIDE
        if scale > 1:
            bgr = _shrink(bgr, scale)
        else:
            scale = 1.0
        rows = np.asarray(self._detect(bgr))
        if rows.ndim != 2 or (len(rows) and rows.shape[1] < 15):
            raise RuntimeUnavailableError(f"yuface returned an unexpected array of shape {rows.shape}")
        faces = []
        for r in rows.astype(np.float64):
            score = r[0] / 100.0  # yuface reports confidence in percent
            if score < self.min_score:
                continue
            x, y, w, h = (r[1:5] * scale)
            faces.append(Face((int(round(x)), int(round(y)), int(round(w)), int(round(h))), float(score),
                              (r[5:15].reshape(5, 2) * scale).astype(np.float32)))
        return sorted(faces, key=lambda f: -f.score)

    def describe(self) -> dict[str, Any]:
        return {"detector": self.name, "min_score": self.min_score}


def _shrink(bgr: np.ndarray, factor: float) -> np.ndarray:
    from .preprocess import resize

    h, w = bgr.shape[:2]
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    return np.stack([np.clip(np.rint(resize(bgr[:, :, c], size, "area")), 0, 255).astype(np.uint8)
                     for c in range(3)], axis=2)


@register_detector
class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade (needs opencv < 5, whose wheels ship the XML files)."""

    name = "haar"
    margin = -0.05  # best of the margins measured by benchmarks/faces.py

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30) -> None:
        ok, why = self.probe()
        if not ok:
            raise RuntimeUnavailableError(f"detector 'haar': {why}")
        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeUnavailableError(f"OpenCV could not load the Haar cascade {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import cv2
        except Exception as e:
            return False, f"cannot import cv2 ({e}); install it with: pip install 'fer-edge[video]'"
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not hasattr(cv2, "CascadeClassifier") or not folder or \
                not os.path.isfile(os.path.join(folder, "haarcascade_frontalface_default.xml")):
            return False, (f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 dropped them); "
                           "pip install 'opencv-python-headless<5'")
        return True, f"OpenCV {cv2.__version__} Haar cascade"

    def detect(self, frame: np.ndarray) -> list[Face]:
        gray = to_gray(_check_frame(frame), what="frame")
        boxes = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        # Haar gives no confidence; 1.0 marks "passed every stage".
        return [Face(tuple(int(v) for v in b), 1.0, None) for b in np.asarray(boxes).reshape(-1, 4)]

    def describe(self) -> dict[str, Any]:
        return {"detector": self.name, "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors,
                "min_size": self.min_size}


def available_detectors() -> dict[str, tuple[bool, str]]:
    return {name: cls.probe() for name, cls in DETECTORS.items()}


def create_detector(name: str | Detector = "auto", **options: Any) -> Detector:
    """A detector by name; "auto" is the first usable one of AUTO_ORDER (an explicit name never falls back)."""
    if isinstance(name, Detector):
        return name
    if name == "auto":
        reasons = {}
        for candidate in [*AUTO_ORDER, *(n for n in DETECTORS if n not in AUTO_ORDER)]:
            ok, why = DETECTORS[candidate].probe()
            if ok:
                return DETECTORS[candidate](**options)
            reasons[candidate] = why
        raise RuntimeUnavailableError("no face detector is usable here: "
                                      + "; ".join(f"{k}: {v}" for k, v in reasons.items()))
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; known detectors: {sorted(DETECTORS)} (or 'auto')")
    return DETECTORS[name](**options)


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Radians to rotate by so the eyes are level (0 without landmarks)."""
    if landmarks is None:
        return 0.0
    (x0, y0), (x1, y1) = sorted(map(tuple, np.asarray(landmarks, dtype=np.float64)[:2]))
    return math.atan2(y1 - y0, x1 - x0)


def crop_face(frame: np.ndarray, face: Face, *, margin: float = 0.0, align: bool = True) -> np.ndarray:
    """A square uint8 gray crop centred on `face`: its longer box side plus `margin` of it on every side.

    With `align` and landmarks, the square turns with the face so the eyes come out level.
    The recogniser was trained on FER2013's framing, so the best margin is the one that
    reproduces it from a detector's boxes: `Detector.margin`, the best of those measured by
    benchmarks/faces.py (slightly negative for YuNet and Haar: their boxes already hold the whole
    face). Pixels outside the frame repeat the nearest edge pixel.
    """
    if not (-0.25 <= margin <= 2.0):
        raise InputError(f"margin must be within [-0.25, 2] (a fraction of the face side), got {margin}")
    frame = _check_frame(frame)
    x, y, w, h = face.box
    if w <= 0 or h <= 0:
        raise InputError(f"face box {face.box} has no area; expected (x, y, width, height) with positive sizes")
    side = max(w, h) * (1 + 2 * margin)
    n = max(1, int(round(side)))
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = eye_angle(face.landmarks) if align else 0.0
    # Output pixel (u, v) samples the frame at centre + R(angle) @ offset.
    grid = (np.arange(n, dtype=np.float32) + 0.5) * (side / n) - side / 2
    du, dv = np.meshgrid(grid, grid)
    c, s = math.cos(angle), math.sin(angle)
    src_x = cx + c * du - s * dv - 0.5
    src_y = cy + s * du + c * dv - 0.5
    # Convert only the region the samples touch: a whole HD frame to gray costs more than the crop.
    fh, fw = frame.shape[:2]
    x0 = int(np.clip(np.floor(src_x.min()), 0, fw - 1))
    x1 = int(np.clip(np.ceil(src_x.max()) + 1, x0 + 1, fw))
    y0 = int(np.clip(np.floor(src_y.min()), 0, fh - 1))
    y1 = int(np.clip(np.ceil(src_y.max()) + 1, y0 + 1, fh))
    gray = to_gray(frame[y0:y1, x0:x1], what="frame").astype(np.float32)
    return _bilinear(gray, src_x - x0, src_y - y0)


def _bilinear(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = img.shape
    xs = np.clip(xs, 0, w - 1, dtype=np.float32)
    ys = np.clip(ys, 0, h - 1, dtype=np.float32)
    x0 = xs.astype(np.intp)  # floor: coordinates are clipped to be >= 0
    y0 = ys.astype(np.intp)
    fx, fy = xs - x0, ys - y0
    dx = (x0 < w - 1).astype(np.intp)  # the right/lower neighbour, or the pixel itself at the edge
    dy = (y0 < h - 1).astype(np.intp) * w
    flat = img.ravel()
    i = y0 * w + x0
    top = flat[i] + (flat[i + dx] - flat[i]) * fx
    bottom = flat[i + dy] + (flat[i + dy + dx] - flat[i + dy]) * fx
    return np.clip(np.rint(top + (bottom - top) * fy), 0, 255).astype(np.uint8)


def detector_for(recognizer, detector: str | Detector | None = None) -> Detector:
    """The recogniser's detector: `detector` if given, else its `detector` attribute (a name or a
    Detector, "auto" when unset), created on first use and kept on the recogniser."""
    wanted = detector if detector is not None else getattr(recognizer, "detector", None) or "auto"
    if isinstance(wanted, Detector):
        return wanted
    cache = recognizer.__dict__.setdefault("_face_detectors", {})
    if wanted not in cache:
        cache[wanted] = create_detector(wanted)
    return cache[wanted]


def predict_frame(recognizer, frame: np.ndarray, *, detector: str | Detector | None = None,
                  margin: float | None = None, align: bool = True, keep_crops: bool = False) -> list[FaceResult]:
    """Detect every face in `frame`, crop it (margin: the detector's own when None) and align it,
    and recognise all crops in one batch."""
    det = detector_for(recognizer, detector)
    faces = det.detect(_check_frame(frame))
    margin = det.margin if margin is None else margin
    crops = [crop_face(frame, f, margin=margin, align=align) for f in faces]
    preds = recognizer.predict_batch(crops) if crops else []
    return [FaceResult(f.box, f.landmarks, f.score, p, c if keep_crops else None)
            for f, p, c in zip(faces, preds, crops)]
