"""Turn user images into model input, driven only by the bundle's input spec.

Pure numpy: the runtime must not need OpenCV or Pillow to preprocess a crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError

INTERPOLATIONS = ("area", "bilinear")
# A face crop smaller than this cannot carry an expression (FER2013 faces are 48 px; eyes and mouth
# need a few pixels each); one larger than this on a side is a photo or a frame, not a crop.
MIN_CROP_PX = 8
MAX_CROP_PX = 4096


@dataclass(frozen=True)
class InputSpec:
    """How a face crop becomes the model's input tensor (NCHW float32).

    `area` averages the source pixels each output pixel covers when shrinking (OpenCV's
    INTER_AREA) and interpolates bilinearly when enlarging; `bilinear` is OpenCV's INTER_LINEAR
    (half-pixel centres) both ways.
    """

    size: tuple[int, int] = (48, 48)  # (height, width)
    channels: int = 1
    color: str = "gray"
    layout: str = "NCHW"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "area"
    input_name: str = "input"
    # Median filter kernel applied after resizing (0 = none): models trained on median-filtered
    # faces (one paper's preprocessing) must see the same filter at run time.
    median: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.channels != 1 or self.color != "gray":
            raise InputError("only 1-channel grayscale models are supported (channels=1, color='gray')")
        if self.layout != "NCHW" or self.dtype != "float32":
            raise InputError("only NCHW float32 model inputs are supported")
        if not (isinstance(self.size, (tuple, list)) and len(self.size) == 2
                and all(isinstance(v, int) and v >= 8 for v in self.size)):
            raise InputError(f"size must be (height, width), integers of at least 8 px, got {self.size!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise InputError(f"mean and std need one value per channel ({self.channels}), got {self.mean}, {self.std}")
        if not (isinstance(self.median, int) and (self.median == 0 or (self.median >= 3 and self.median % 2))):
            raise InputError(f"median must be 0 (off) or an odd kernel size >= 3, got {self.median!r}")
        if not all(np.isfinite(v) and v > 0 for v in self.std) or not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"std and scale must be positive and finite, got std={self.std}, scale={self.scale}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown input spec fields: {sorted(unknown)}")
        d = dict(d)
        for key in ("size", "mean", "std"):
            if key in d:
                if not isinstance(d[key], (list, tuple)):
                    raise InputError(f"input spec field {key!r} must be a list, got {d[key]!r}")
                d[key] = tuple(d[key])
        return cls(**d)


def to_gray(image: Any, *, what: str = "image") -> np.ndarray:
    """Validate one image and return it as a 2-D uint8 grayscale array.

    Accepts uint8 HxW (gray), HxWx1, HxWx3 (BGR, OpenCV's order) or HxWx4 (BGRA).
    """
    if image is None:
        raise InputError(f"{what} is None; expected a uint8 numpy array (HxW gray, HxWx3 BGR or HxWx4 BGRA)")
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} is a {type(image).__name__}; expected a uint8 numpy array")
    if image.dtype.kind == "f" and image.size and not np.isfinite(image).all():
        raise InputError(f"{what} contains NaN or infinite values")
    if image.dtype != np.uint8:
        raise InputError(f"{what} has dtype {image.dtype}; expected uint8 (0..255). {_conversion_hint(image)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        bgr = image[:, :, :3].astype(np.float32)
        # ITU-R BT.601 luma, the weights OpenCV's cvtColor uses.
        gray_f = bgr[:, :, 0] * 0.114 + bgr[:, :, 1] * 0.587 + bgr[:, :, 2] * 0.299
        gray = np.clip(np.rint(gray_f), 0, 255).astype(np.uint8)
    else:
        raise InputError(
            f"{what} has shape {image.shape}; expected HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA)"
        )
    if gray.shape[0] < 1 or gray.shape[1] < 1:
        raise InputError(f"{what} is empty (shape {image.shape})")
    return gray


def _conversion_hint(image: np.ndarray) -> str:
    """How to convert this array to uint8, judged from its dtype and its values (not a guess)."""
    if image.dtype == np.bool_:
        return "For a boolean mask: img.astype(np.uint8) * 255"
    if image.dtype.kind not in "fiu" or not image.size:
        return "Convert it to uint8 0..255 first"
    lo, hi = float(image.min()), float(image.max())
    if image.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return "Its values are in [0, 1]: (img * 255).round().clip(0, 255).astype(np.uint8)"
    if lo >= 0 and hi <= 255:
        cast = "np.rint(img).astype(np.uint8)" if image.dtype.kind == "f" else "img.astype(np.uint8)"
        return f"Its values are already in 0..255: {cast}"
    return (f"Its values span {lo:g}..{hi:g}: rescale them to 0..255 first, e.g. "
            "((img - img.min()) * (255 / np.ptp(img))).astype(np.uint8)")


def check_crop_size(gray: np.ndarray, what: str = "image") -> None:
    """A face crop of MIN_CROP_PX..MAX_CROP_PX px a side; anything else is refused, with the reason."""
    h, w = gray.shape[:2]
    if min(h, w) < MIN_CROP_PX:
        raise InputError(f"{what} is {h}x{w} px; a face crop needs at least {MIN_CROP_PX}x{MIN_CROP_PX} px to "
                         "carry an expression (the model sees 48x48)")
    if max(h, w) > MAX_CROP_PX:
        raise InputError(f"{what} is {h}x{w} px, larger than any face crop (at most {MAX_CROP_PX} px a side): "
                         "crop the face first, or pass the frame to Recognizer.predict_frame to detect the faces")


@lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int, method: str) -> np.ndarray:
    """(n_out, n_in) matrix whose rows hold one output pixel's weights over input pixels."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    if method == "area" and n_out < n_in:
        for o in range(n_out):
            lo, hi = o * scale, (o + 1) * scale
            first, last = int(np.floor(lo)), int(np.ceil(hi))
            for i in range(first, min(last, n_in)):
                w[o, i] = min(hi, i + 1) - max(lo, i)
        w /= w.sum(axis=1, keepdims=True)
    else:  # bilinear, and area when enlarging
        centres = (np.arange(n_out) + 0.5) * scale - 0.5
        centres = np.clip(centres, 0, n_in - 1)
        left = np.floor(centres).astype(int)
        right = np.minimum(left + 1, n_in - 1)
        frac = centres - left
        w[np.arange(n_out), left] += 1 - frac
        w[np.arange(n_out), right] += frac
    return w.astype(np.float32)


def resize(gray: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize a 2-D image to (height, width) as float32, separably (rows then columns)."""
    h, w = gray.shape
    out_h, out_w = size
    img = gray.astype(np.float32)
    if (h, w) == (out_h, out_w):
        return img
    return _weights(h, out_h, method) @ img @ _weights(w, out_w, method).T


def median_filter(images: np.ndarray, kernel: int) -> np.ndarray:
    """Median of each kernel x kernel window with replicated edges (cv2.medianBlur's rule),
    over (N, H, W) images: the same filter the training module applies to uint8 faces."""
    pad = kernel // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(1, 2))
    return np.median(windows.reshape(*images.shape, kernel * kernel), axis=-1).astype(np.float32)


def preprocess(images: Sequence[Any], spec: InputSpec, *, names: Sequence[str] | None = None) -> np.ndarray:
    """A sequence of images -> contiguous float32 batch of shape (N, 1, H, W).

    A numpy array counts as a sequence of images along its first axis (N x H x W gray or
    N x H x W x C colour); pass a single image as a one-element list. `names` (one per image,
    e.g. file paths) name the images in errors; default "image[i]".
    """
    if images is None:
        raise InputError("images is None; expected a list of uint8 images")
    if not isinstance(images, (np.ndarray, Sequence)):
        if not isinstance(images, Iterable) or isinstance(images, (dict, set, frozenset)):
            raise InputError(f"images is a {type(images).__name__}; expected a list of uint8 images")
        images = list(images)  # a generator or other one-pass iterable: taken once, in order
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise InputError(
            f"a batch array must be N x H x W or N x H x W x C, got shape {images.shape}; "
            "pass a single image to predict(), or a list of images"
        )
    if len(images) == 0:
        raise InputError("empty batch; expected at least one image")
    if names is not None:
        names = list(names)
        if len(names) != len(images):
            raise InputError(f"{len(names)} names for {len(images)} images; pass one name per image")
    batch = np.empty((len(images), 1, *spec.size), dtype=np.float32)
    for i, image in enumerate(images):
        what = names[i] if names is not None else f"image[{i}]"
        gray = to_gray(image, what=what)
        check_crop_size(gray, what)
        # A crop already at the model's size is cast in the copy itself (resize would copy twice).
        batch[i, 0] = gray if gray.shape == tuple(spec.size) else resize(gray, spec.size, spec.interpolation)
    if spec.median:
        batch[:, 0] = median_filter(batch[:, 0], spec.median)
    batch *= np.float32(spec.scale)
    # Skipping the identities (mean 0, std 1) leaves every value bit-identical and saves a pass.
    if spec.mean[0] != 0:
        batch -= np.float32(spec.mean[0])
    if spec.std[0] != 1:
        batch /= np.float32(spec.std[0])
    return batch
