"""Load face datasets in the two layouts users hold: an ImageFolder tree and Kaggle's fer2013.csv.

Everything comes back as one `FaceSet`: uint8 images (N, H, W), int64 labels indexing
`fer_edge.labels.EMOTIONS`, and where each image came from. Unreadable images are reported
with their paths, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError
from .jpeg_check import MAX_PIXELS, check_jpeg
from .labels import EMOTIONS, FER2013_CSV_CODES, FER2013_CSV_USAGE
from .preprocess import resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class FaceSet:
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int64, indexes into `classes`
    sources: list[str]  # a path, or "file.csv:row" per image
    classes: tuple[str, ...] = EMOTIONS

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, index: np.ndarray | Sequence[int]) -> "FaceSet":
        index = np.asarray(index)
        return FaceSet(self.images[index], self.labels[index], [self.sources[i] for i in index], self.classes)


MAX_IMAGE_BYTES = 64 << 20  # read into memory whole; no face crop or camera frame comes near it
MAX_IMAGE_PIXELS = MAX_PIXELS  # decoded size cap (Pillow's own bomb check only warns below ~179 MP)


def read_image(path: str | os.PathLike, *, check: bool = True) -> np.ndarray:
    """Read an image file as uint8: HxW for grayscale files, HxWx3 BGR otherwise.

    Only regular files are read (a FIFO, device or folder is refused by `stat`, before opening),
    of at most MAX_IMAGE_BYTES. Images deeper than 8 bits follow one rule: 16-bit integers are
    scaled by their full range (v / 257, so 65535 -> 255); float images must hold values in [0, 1]
    (x 255); any other range (32-bit integers, floats outside [0, 1]) is refused, since the range
    the values were meant to span is unknown.

    check: walk a JPEG's image data first (fer_edge.jpeg_check), because Pillow decodes damaged
    data silently into a garbled face; a fault is a DataError naming the file.
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is a core dependency
        raise DataError("reading image files needs Pillow: pip install pillow") from e
    data = _read_regular_file(path)
    if check:
        fault = check_jpeg(data)
        if fault:
            raise DataError(f"{path}: corrupt JPEG data ({fault}); the decoder would return a damaged image "
                            "(read it anyway with check=False, or --allow-corrupt on the command line)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {im.width}x{im.height} px is more than this reader decodes "
                                f"({MAX_IMAGE_PIXELS:,} px)")
            im.load()
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                # Pillow widens 16-bit PNG / PGM samples to mode "I" (0..65535) in some versions and formats
                sixteen = im.mode.startswith("I;16") or (im.mode == "I" and im.format in ("PNG", "PPM"))
                return _deep_to_uint8(np.asarray(im), path, sixteen=sixteen)
            if im.mode in ("L", "1", "P") and _is_gray(im):
                return np.asarray(im.convert("L"), dtype=np.uint8)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            return np.ascontiguousarray(rgb[:, :, ::-1])
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for corrupt files
        raise DataError(f"cannot read image {path}: {e}") from e


def _read_regular_file(path: str | os.PathLike) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_IMAGE_BYTES. O_NONBLOCK and a second
    check on the open descriptor: a FIFO swapped in after the stat still cannot block the read."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    _check_regular(path, st)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    try:
        _check_regular(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    finally:
        os.close(fd)
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB; not an image this reader takes")
    return data


def _check_regular(path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise DataError(f"{path} is {kind}; only regular image files are read")
    if st.st_size > MAX_IMAGE_BYTES:
        raise DataError(f"{path}: {st.st_size:,} bytes, larger than {MAX_IMAGE_BYTES >> 20} MiB; "
                        "not an image this reader takes")


def _deep_to_uint8(a: np.ndarray, path, *, sixteen: bool) -> np.ndarray:
    """The documented rule for images deeper than 8 bits (see read_image)."""
    if sixteen and a.dtype.kind in "iu" and (not a.size or (a.min() >= 0 and a.max() <= 65535)):
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{path}: a float image with NaN or infinite values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(a.astype(np.float64) * 255).astype(np.uint8)
        raise DataError(f"{path}: a float image with values in {lo:g}..{hi:g}; float images are read only in "
                        "[0, 1] (the range other values were meant to span is unknown): save it as 8 or 16 bit")
    raise DataError(f"{path}: a {8 * a.dtype.itemsize}-bit integer image ({a.dtype}); only 8- and 16-bit "
                    "integer images are read (the range of wider ones is unknown): save it as 8 or 16 bit")


def _is_gray(im) -> bool:
    if im.mode != "P":
        return True
    palette = np.asarray(im.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def _to_gray_size(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from .preprocess import to_gray

    gray = to_gray(img)
    if gray.shape != tuple(size):
        gray = np.clip(np.rint(resize(gray, size, "area")), 0, 255).astype(np.uint8)
    return gray


def load_image_folder(
    root: str | os.PathLike,
    *,
    size: tuple[int, int] = (48, 48),
    classes: Sequence[str] = EMOTIONS,
    limit_per_class: int | None = None,
    skip_corrupt: bool = False,
) -> FaceSet:
    """Load `root/<class>/<image>` into memory, resized to `size` if needed.

    Class folders are matched by name against `classes`; a folder with another name is an
    error (a typo would otherwise silently drop a class). `limit_per_class` takes the first N
    files of each class in sorted order, for quick checks.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    unknown = [f for f in folders if f not in classes]
    if unknown:
        raise DataError(f"{root}: class folders {unknown} are not among the known classes {list(classes)}")
    if not folders:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<image> with classes {list(classes)}")
    images, labels, sources, bad = [], [], [], []
    for name in folders:
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if limit_per_class is not None:
            files = files[:limit_per_class]
        for path in files:
            try:
                images.append(_to_gray_size(read_image(path), size))
            except DataError as e:
                bad.append(str(e))
                continue
            labels.append(classes.index(name))
            sources.append(str(path))
    _report_bad(bad, skip_corrupt)
    if not images:
        raise DataError(f"{root}: no readable images found (suffixes {IMAGE_SUFFIXES})")
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), sources, tuple(classes))


def load_fer2013_csv(
    path: str | os.PathLike,
    split: str | None = None,
    *,
    size: tuple[int, int] = (48, 48),
    limit_per_class: int | None = None,
    skip_corrupt: bool = False,
) -> FaceSet:
    """Load Kaggle's fer2013.csv (`emotion,pixels,Usage`); `split` is train/val/test or None for all.

    The CSV's integer codes are mapped to class names, then to this package's class order.
    `limit_per_class` keeps the first N rows of each class, for quick checks.
    """
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    images, labels, sources, bad = [], [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}; expected emotion,pixels,Usage")
        if split is not None and "Usage" not in (reader.fieldnames or []):
            raise DataError(f"{path}: no Usage column, so split={split!r} cannot be selected")
        taken = {name: 0 for name in EMOTIONS}
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if split is not None:
                usage = FER2013_CSV_USAGE.get(row.get("Usage"))
                if usage is None:
                    bad.append(f"{where}: unknown Usage {row['Usage']!r}")
                    continue
                if usage != split:
                    continue
            try:
                if row.get("emotion") is None or row.get("pixels") is None:
                    raise ValueError("row has too few fields; expected emotion,pixels,Usage")
                code = int(row["emotion"])
                if code not in FER2013_CSV_CODES:
                    raise ValueError(f"unknown emotion code {code}; fer2013.csv uses {sorted(FER2013_CSV_CODES)}")
                name = FER2013_CSV_CODES[code]
                pixels = np.array(row["pixels"].split(), dtype=np.int64)
                side = int(round(len(pixels) ** 0.5))
                if side * side != len(pixels) or side == 0 or pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError(f"{len(pixels)} pixel values, expected a square image of 0..255")
            except (KeyError, ValueError) as e:
                bad.append(f"{where}: {e}")
                continue
            if limit_per_class is not None and taken[name] >= limit_per_class:
                continue
            taken[name] += 1
            images.append(_to_gray_size(pixels.astype(np.uint8).reshape(side, side), size))
            labels.append(EMOTIONS.index(name))
            sources.append(where)
    _report_bad(bad, skip_corrupt)
    if not images:
        raise DataError(f"{path}: no usable rows" + (f" for split {split!r}" if split else ""))
    return FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), sources)


def load_dataset(path: str | os.PathLike, split: str | None = None, **kwargs) -> FaceSet:
    """One entry point: a .csv file, an ImageFolder root with split folders, or a class-folder tree."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return load_fer2013_csv(path, split, **kwargs)
    if split is not None and (path / split).is_dir():
        return load_image_folder(path / split, **kwargs)
    if split is not None and any((path / s).is_dir() for s in SPLITS):
        raise DataError(f"{path}: no {split!r} split folder (found {[s for s in SPLITS if (path / s).is_dir()]})")
    return load_image_folder(path, **kwargs)


def _report_bad(bad: list[str], skip: bool) -> None:
    if not bad:
        return
    shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
    if not skip:
        raise DataError(f"{len(bad)} unreadable images or rows (pass skip_corrupt=True to skip them):\n  {shown}")
    warnings.warn(f"skipped {len(bad)} unreadable images or rows:\n  {shown}", stacklevel=3)
