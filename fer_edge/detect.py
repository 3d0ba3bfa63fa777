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

Both detectors run on the frame shrunk so the smallest face asked for (`min_face`, 48 px of the
frame by default) lands at 40 px, below which each starts missing many faces (`python
benchmarks/frames.py --min-size`: YuNet finds 70 % of pasted FER2013 faces at 40 px, 80 % at
64 px, 12 % at 24 px); boxes and landmarks are mapped back to the frame. The detector's cost
falls with the square of that factor (a 640x480 frame is detected at 533x400 by default, at
320x240 with min_face=80).
YuNet is called through libfacedetection's own entry point with one reused result buffer:
yuface's `c_detect` leaks that buffer (36 KB) on every call.

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

from .errors import InputError, RuntimeUnavailableError, install_hint
from .preprocess import to_gray
from .types import Prediction

YUNET_MAX_SIDE = 960  # libfacedetection's tested input limit; larger frames are scaled down first
# Detection runs on the frame shrunk so the smallest face asked for (min_face, frame pixels) lands
# at the size below which the detector starts missing many faces (measured: benchmarks/frames.py).
DEFAULT_MIN_FACE = 48
SMALLEST_YUNET = 40
SMALLEST_HAAR = 40


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


def _cv2_or_none():
    try:
        import cv2
    except Exception:  # absent, or a broken wheel: numpy does the resizing then
        return None
    return cv2


def working_scale(shape: tuple[int, ...], min_face: int, smallest: int, max_side: int) -> float:
    """The factor (>= 1) to shrink a frame by so a face of `min_face` px lands at `smallest` px,
    the detector's least reliable size, and the frame's longer side within `max_side`."""
    return max(1.0, min_face / smallest, max(shape[:2]) / max_side)


def shrink(img: np.ndarray, factor: float) -> np.ndarray:
    """`img` (HxW or HxWxC uint8) scaled down by `factor` with area averaging: OpenCV's INTER_AREA
    when cv2 imports (50x faster), else numpy."""
    h, w = img.shape[:2]
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    if factor <= 1.0 or size == (h, w):
        return img
    cv2 = _cv2_or_none()
    if cv2 is not None:
        return cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)
    from .preprocess import resize

    planes = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    out = [np.clip(np.rint(resize(p, size, "area")), 0, 255).astype(np.uint8) for p in planes]
    return out[0] if img.ndim == 2 else np.stack(out, axis=2)


def _check_options(min_face: int, threads: int | None) -> None:
    if not isinstance(min_face, (int, np.integer)) or isinstance(min_face, bool) or min_face < 8:
        raise InputError(f"min_face must be an integer >= 8 (pixels of the frame), got {min_face!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")


class _YuNetCall:
    """libfacedetection's `facedetect_cnn` called through ctypes with one result buffer reused.

    yuface's own `c_detect` allocates that 0x9000-byte buffer on every call and never frees it
    (about 35 KB a frame: 3.8 GB an hour at 30 fps); the library inside the same wheel takes the
    buffer from its caller, so this wrapper passes the same one each time. Rows are
    [confidence %, x, y, w, h, 5 x (x, y) landmarks] as signed shorts, as c_detect returns them.
    """

    BUFFER = 0x9000  # libfacedetection's DETECT_BUFFER_SIZE

    def __init__(self) -> None:
        import ctypes
        import threading

        import yuface

        folder = os.path.dirname(yuface.__file__)
        lib = ctypes.CDLL(os.path.join(folder, "libfacedetection.so"))
        self._fn = lib._Z14facedetect_cnnPhS_iii  # int *facedetect_cnn(uchar *buf, uchar *bgr, int w, int h, int step)
        self._fn.restype = ctypes.POINTER(ctypes.c_int)
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._buf = np.zeros(self.BUFFER, np.uint8)
        self._lock = threading.Lock()  # one buffer: calls from several threads take turns
        libs = os.path.join(os.path.dirname(folder), "yuface.libs")
        gomp = [f for f in sorted(os.listdir(libs)) if f.startswith("libgomp")] if os.path.isdir(libs) else []
        # The wheel's own OpenMP runtime (already loaded by libfacedetection), to set its thread count.
        self._omp = ctypes.CDLL(os.path.join(libs, gomp[0])) if gomp else None

    def set_threads(self, n: int) -> bool:
        if self._omp is None:
            return False
        self._omp.omp_set_num_threads(int(n))
        return True

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(bgr)
        h, w = bgr.shape[:2]
        with self._lock:
            n = self._fn(self._buf.ctypes.data, bgr.ctypes.data, w, h, bgr.strides[0])[0]
            n = max(0, min(int(n), (self.BUFFER - 4) // 32))
            return np.frombuffer(self._buf, np.int16, count=16 * n, offset=4).reshape(n, 16)[:, :15].copy()


@register_detector
class YuNetDetector(Detector):
    """YuNet (libfacedetection) from the `yuface` wheel: boxes, scores and 5 landmarks.

    `min_face`: the smallest face to find, in pixels of the frame; the frame is shrunk so that size
    lands at SMALLEST px, where YuNet still finds most faces (benchmarks/frames.py --min-size), so
    larger min_face means a smaller working frame and a faster detector. `threads`: the OpenMP
    threads libfacedetection uses and OpenCV's (process-wide) when it is there to resize; None
    leaves both at their defaults (OMP_NUM_THREADS or all cores).
    """

    name = "yunet"
    margin = -0.05  # best of the margins measured by benchmarks/faces.py
    SMALLEST = SMALLEST_YUNET

    def __init__(self, *, min_score: float = 0.5, min_face: int = DEFAULT_MIN_FACE, threads: int | None = None) -> None:
        ok, why = self.probe()
        if not ok:
            raise RuntimeUnavailableError(f"detector 'yunet': {why}")
        if not 0.0 <= min_score <= 1.0:
            raise InputError(f"min_score must be within [0, 1], got {min_score}")
        _check_options(min_face, threads)
        self._detect = _YuNetCall()
        self.min_score, self.min_face, self.threads = min_score, int(min_face), threads
        if threads is not None and not self._detect.set_threads(threads):
            raise RuntimeUnavailableError("detector 'yunet': cannot set its thread count (no OpenMP runtime "
                                          "found beside yuface); pass threads=None")
        cv2 = _cv2_or_none()
        if threads is not None and cv2 is not None:
            cv2.setNumThreads(threads)  # it resizes the frames (and video follows faces with it)

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import yuface  # noqa: F401
        except Exception as e:  # ImportError, or a broken native library (OSError)
            return False, (f"cannot import yuface ({e}); install it with: {install_hint('video')} "
                           "(wheels for x86-64 CPython 3.8-3.11 only; elsewhere use detector='haar')")
        return True, "yuface (YuNet, libfacedetection)"

    def detect(self, frame: np.ndarray) -> list[Face]:
        bgr = _to_bgr(_check_frame(frame))
        scale = working_scale(bgr.shape, self.min_face, self.SMALLEST, YUNET_MAX_SIDE)
        small = shrink(bgr, scale)
        sy, sx = bgr.shape[0] / small.shape[0], bgr.shape[1] / small.shape[1]  # exact after rounding
        if self.threads is not None:
            self._detect.set_threads(self.threads)  # OpenMP's count is per calling thread
        rows = self._detect(small)
        faces = []
        for r in rows.astype(np.float64):
            score = r[0] / 100.0  # libfacedetection reports confidence in percent
            if score < self.min_score:
                continue
            x, y, w, h = r[1] * sx, r[2] * sy, r[3] * sx, r[4] * sy
            marks = (r[5:15].reshape(5, 2) * (sx, sy)).astype(np.float32)
            faces.append(Face((int(round(x)), int(round(y)), int(round(w)), int(round(h))), float(score), marks))
        return sorted(faces, key=lambda f: -f.score)

    def describe(self) -> dict[str, Any]:
        return {"detector": self.name, "min_score": self.min_score, "min_face": self.min_face,
                "working_face_px": self.SMALLEST, "threads": self.threads,
                "resize": "opencv" if _cv2_or_none() is not None else "numpy"}


@register_detector
class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade (needs opencv < 5, whose wheels ship the XML files).

    `min_face` works as for YuNet: the frame is shrunk so that size lands at SMALLEST px (the
    cascade's own least window is 24 px, but it misses most faces that small). `threads` is
    OpenCV's (cv2.setNumThreads, process-wide: the last detector made sets it). `min_size` (the
    old spelling) is min_face.
    """

    name = "haar"
    margin = -0.05  # best of the margins measured by benchmarks/faces.py
    SMALLEST = SMALLEST_HAAR

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5, min_face: int = DEFAULT_MIN_FACE,
                 threads: int | None = None, min_size: int | None = None) -> None:
        ok, why = self.probe()
        if not ok:
            raise RuntimeUnavailableError(f"detector 'haar': {why}")
        min_face = min_size if min_size is not None else min_face
        _check_options(min_face, threads)
        if not scale_factor > 1.0 or min_neighbors < 0:
            raise InputError(f"scale_factor must be > 1 and min_neighbors >= 0, got {scale_factor}, {min_neighbors}")
        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeUnavailableError(f"OpenCV could not load the Haar cascade {path}")
        if threads is not None:
            cv2.setNumThreads(threads)
        self.scale_factor, self.min_neighbors, self.min_face, self.threads = \
            scale_factor, min_neighbors, int(min_face), threads

    @property
    def min_size(self) -> int:
        return self.min_face

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import cv2
        except Exception as e:
            return False, f"cannot import cv2 ({e}); install it with: {install_hint('video')}"
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not hasattr(cv2, "CascadeClassifier") or not folder or \
                not os.path.isfile(os.path.join(folder, "haarcascade_frontalface_default.xml")):
            return False, (f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 dropped them); "
                           "pip install 'opencv-python-headless<5'")
        return True, f"OpenCV {cv2.__version__} Haar cascade"

    def detect(self, frame: np.ndarray) -> list[Face]:
        gray = to_gray(_check_frame(frame), what="frame")
        small = shrink(gray, working_scale(gray.shape, self.min_face, self.SMALLEST, 1 << 30))
        sy, sx = gray.shape[0] / small.shape[0], gray.shape[1] / small.shape[1]
        least = max(self.SMALLEST, int(math.floor(self.min_face / max(sx, sy))))
        boxes = self._cascade.detectMultiScale(small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(least, least))
        # Haar gives no confidence; 1.0 marks "passed every stage".
        return [Face((int(round(x * sx)), int(round(y * sy)), int(round(w * sx)), int(round(h * sy))), 1.0, None)
                for x, y, w, h in np.asarray(boxes).reshape(-1, 4)]

    def describe(self) -> dict[str, Any]:
        return {"detector": self.name, "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors,
                "min_face": self.min_face, "working_face_px": self.SMALLEST, "threads": self.threads}


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
                return _make(DETECTORS[candidate], options)
            reasons[candidate] = why
        raise RuntimeUnavailableError("no face detector is usable here: "
                                      + "; ".join(f"{k}: {v}" for k, v in reasons.items()))
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; known detectors: {sorted(DETECTORS)} (or 'auto')")
    return _make(DETECTORS[name], options)


def _make(cls: type[Detector], options: dict[str, Any]) -> Detector:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if "threads" in options and "threads" not in params and \
            not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k != "threads"}  # a third-party detector without threads
    return cls(**options)


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Radians to rotate by so the eyes are level (0 without landmarks)."""
    if landmarks is None:
        return 0.0
    (x0, y0), (x1, y1) = sorted(map(tuple, np.asarray(landmarks, dtype=np.float64)[:2]))
    return math.atan2(y1 - y0, x1 - x0)


def crop_face(frame: np.ndarray, face: Face, *, margin: float = 0.0, align: bool = True,
              max_side: int | None = None) -> np.ndarray:
    """A square uint8 gray crop centred on `face`: its longer box side plus `margin` of it on every side.

    `max_side` caps the crop's side in pixels: a bigger face is area-averaged down first and then
    sampled, so a 250 px face costs what a `max_side` one does (the recogniser shrinks every crop
    to its input size anyway; `crop_side_for` gives twice that size, where its area resize is an
    exact 2x2 average).

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
    if max_side is not None:
        if not isinstance(max_side, (int, np.integer)) or max_side < 8:
            raise InputError(f"max_side must be an integer >= 8 (pixels) or None, got {max_side!r}")
        n = min(n, int(max_side))
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = eye_angle(face.landmarks) if align else 0.0
    c, s, step = math.cos(angle), math.sin(angle), side / n
    first = 0.5 * step - side / 2  # the first sample's offset from the centre, along each axis
    # Output pixel (u, v) samples the frame at centre + R(angle) @ offset: an affine map, as
    # (pixel-index) x = A @ (u, v, 1).
    A = np.array([[c * step, -s * step, cx - 0.5 + (c - s) * first],
                  [s * step, c * step, cy - 0.5 + (s + c) * first]])
    corners = A @ np.array([[0, n - 1, 0, n - 1], [0, 0, n - 1, n - 1], [1, 1, 1, 1]], dtype=np.float64)
    # Convert only the region the samples touch: a whole HD frame to gray costs more than the crop.
    fh, fw = frame.shape[:2]
    x0 = int(np.clip(np.floor(corners[0].min()), 0, fw - 1))
    x1 = int(np.clip(np.ceil(corners[0].max()) + 1, x0 + 1, fw))
    y0 = int(np.clip(np.floor(corners[1].min()), 0, fh - 1))
    y1 = int(np.clip(np.ceil(corners[1].max()) + 1, y0 + 1, fh))
    gray = to_gray(frame[y0:y1, x0:x1], what="frame")
    A[:, 2] -= (x0, y0)
    if step >= 1.5:  # shrinking: average the region down first, or bilinear sampling would alias
        small = shrink(np.ascontiguousarray(gray), step)
        for row, f in ((0, small.shape[1] / gray.shape[1]), (1, small.shape[0] / gray.shape[0])):
            A[row] *= f  # index x in the region is index (x + 0.5) * f - 0.5 in the shrunk one
            A[row, 2] += 0.5 * f - 0.5
        gray = small
    cv2 = _cv2_or_none()
    if cv2 is not None:  # the same bilinear sampling, edge pixels repeated: 10x faster than numpy's
        return cv2.warpAffine(gray, A.astype(np.float32), (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    u, v = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
    xs = np.float32(A[0, 0]) * u + np.float32(A[0, 1]) * v + np.float32(A[0, 2])
    ys = np.float32(A[1, 0]) * u + np.float32(A[1, 1]) * v + np.float32(A[1, 2])
    return _bilinear(gray.astype(np.float32), xs, ys)


def crop_side_for(recognizer) -> int | None:
    """The crop side frames are cut at for `recognizer`: twice its model's input side (None when
    it has no input spec, e.g. a stand-in in a test)."""
    spec = getattr(recognizer, "spec", None)
    return None if spec is None else 2 * max(spec.size)


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
        threads = getattr(recognizer, "threads", None)
        cache[wanted] = create_detector(wanted, **({"threads": threads} if threads is not None else {}))
    return cache[wanted]


def predict_frame(recognizer, frame: np.ndarray, *, detector: str | Detector | None = None,
                  margin: float | None = None, align: bool = True, keep_crops: bool = False) -> list[FaceResult]:
    """Detect every face in `frame`, crop it (margin: the detector's own when None) and align it,
    and recognise all crops in one batch."""
    det = detector_for(recognizer, detector)
    faces = det.detect(_check_frame(frame))
    margin = det.margin if margin is None else margin
    cap = crop_side_for(recognizer)
    crops = [crop_face(frame, f, margin=margin, align=align, max_side=cap) for f in faces]
    preds = recognizer.predict_batch(crops) if crops else []
    return [FaceResult(f.box, f.landmarks, f.score, p, c if keep_crops else None)
            for f, p, c in zip(faces, preds, crops)]
