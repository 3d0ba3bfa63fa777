"""fer_edge.data: ImageFolder trees and Kaggle's fer2013.csv, written into tmp_path and read back."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_edge.data import FaceSet, load_dataset, load_fer2013_csv, load_image_folder, read_image
from fer_edge.errors import DataError, FerEdgeError
from fer_edge.labels import EMOTIONS


# The Kaggle CSV's published code table, written out independently of fer_edge.labels.
KAGGLE_CODE_TO_INDEX = {0: 0, 1: 1, 2: 2, 3: 3, 4: 5, 5: 6, 6: 4}  # 4 sad -> 5, 5 surprise -> 6, 6 neutral -> 4


def _rand(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _cv2():
    return pytest.importorskip("cv2", reason="opencv-python-headless is needed for reference values")


# --------------------------------------------------------------------------- ImageFolder


@pytest.fixture
def folder(tmp_path):
    """A small tree: happy/ (gray PNGs + a colour PNG), sad/ (an off-size gray), neutral/ (a JPEG)."""
    root = tmp_path / "tree"
    arrays = {
        "happy/a.png": _rand((48, 48), 1),
        "happy/b.png": _rand((48, 48), 2),
        "happy/c_rgb.png": _rand((48, 48, 3), 3),
        "sad/big.png": _rand((96, 72), 4),
        "neutral/n.JPG": np.full((48, 48), 128, np.uint8),
    }
    for rel, arr in arrays.items():
        _save(root / rel, arr)
    (root / "happy" / "notes.txt").write_text("not an image, ignored by suffix")
    return root, arrays


def test_image_folder_basic(folder):
    root, arrays = folder
    fs = load_image_folder(root)
    assert isinstance(fs, FaceSet) and len(fs) == 5
    assert fs.images.shape == (5, 48, 48) and fs.images.dtype == np.uint8
    assert fs.labels.dtype == np.int64
    assert fs.classes == EMOTIONS
    by_src = {Path(s).relative_to(root).as_posix(): (img, int(lab)) for s, img, lab in zip(fs.sources, fs.images, fs.labels)}
    assert set(by_src) == set(arrays)  # notes.txt is skipped
    # Labels by folder name, in EMOTIONS order: happy=3, neutral=4, sad=5.
    assert {k: v[1] for k, v in by_src.items()} == {
        "happy/a.png": 3, "happy/b.png": 3, "happy/c_rgb.png": 3, "sad/big.png": 5, "neutral/n.JPG": 4}
    np.testing.assert_array_equal(by_src["happy/a.png"][0], arrays["happy/a.png"])
    np.testing.assert_array_equal(by_src["happy/b.png"][0], arrays["happy/b.png"])
    assert fs.counts() == {"angry": 0, "disgust": 0, "fear": 0, "happy": 3, "neutral": 1, "sad": 1, "surprise": 0}


def test_image_folder_colour_converted_like_cv2(folder):
    cv2 = _cv2()
    root, arrays = folder
    fs = load_image_folder(root)
    got = fs.images[[s.endswith("c_rgb.png") for s in fs.sources]][0]
    ref = cv2.cvtColor(arrays["happy/c_rgb.png"], cv2.COLOR_RGB2GRAY)  # Pillow wrote it as RGB
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_image_folder_resizes_other_sizes_with_area(folder):
    cv2 = _cv2()
    root, arrays = folder
    fs = load_image_folder(root)
    got = fs.images[[s.endswith("big.png") for s in fs.sources]][0]
    ref = cv2.resize(arrays["sad/big.png"], (48, 48), interpolation=cv2.INTER_AREA)
    assert got.shape == (48, 48)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_image_folder_jpeg_gray(folder):
    root, _ = folder
    fs = load_image_folder(root)
    got = fs.images[[s.endswith("n.JPG") for s in fs.sources]][0]
    assert np.abs(got.astype(int) - 128).max() <= 2  # JPEG is lossy, a flat field stays flat


def test_image_folder_custom_size(folder):
    root, arrays = folder
    fs = load_image_folder(root, size=(24, 32))
    assert fs.images.shape == (5, 24, 32)


def test_image_folder_custom_classes(tmp_path):
    _save(tmp_path / "b" / "x.png", _rand((48, 48), 0))
    _save(tmp_path / "a" / "y.png", _rand((48, 48), 1))
    fs = load_image_folder(tmp_path, classes=["b", "a"])
    assert fs.classes == ("b", "a")
    assert dict(zip([Path(s).name for s in fs.sources], fs.labels.tolist())) == {"x.png": 0, "y.png": 1}


def test_image_folder_unknown_class_is_named(folder):
    root, _ = folder
    _save(root / "hapy" / "z.png", _rand((48, 48), 9))
    with pytest.raises(DataError, match="hapy"):
        load_image_folder(root)


def test_image_folder_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no readable images"):
        load_image_folder(tmp_path)


def test_image_folder_corrupt_file_names_path(folder):
    root, _ = folder
    bad = root / "sad" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError) as info:
        load_image_folder(root)
    assert str(bad) in str(info.value)
    assert "skip_corrupt" in str(info.value)


def test_image_folder_skip_corrupt_warns_and_skips(folder):
    root, arrays = folder
    bad = root / "sad" / "broken.jpg"
    bad.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped 1") as rec:
        fs = load_image_folder(root, skip_corrupt=True)
    assert str(bad) in str(rec[0].message)
    assert len(fs) == len(arrays) and str(bad) not in fs.sources


def test_image_folder_only_corrupt_still_errors(tmp_path):
    (tmp_path / "fear").mkdir()
    (tmp_path / "fear" / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning):
        with pytest.raises(DataError, match="no readable images"):
            load_image_folder(tmp_path, skip_corrupt=True)


def test_image_folder_limit_per_class(tmp_path):
    for cls in ("angry", "surprise"):
        for i in range(5):
            _save(tmp_path / cls / f"{i:02d}.png", np.full((48, 48), i * 10, np.uint8))
    fs = load_image_folder(tmp_path, limit_per_class=2)
    assert len(fs) == 4
    assert fs.counts()["angry"] == 2 and fs.counts()["surprise"] == 2
    assert sorted(Path(s).name for s in fs.sources) == ["00.png", "00.png", "01.png", "01.png"]
    assert sorted(set(fs.images[:, 0, 0].tolist())) == [0, 10]


def test_read_image_modes(tmp_path):
    gray = _rand((10, 12), 5)
    rgb = _rand((10, 12, 3), 6)
    rgba = _rand((10, 12, 4), 7)
    assert read_image(_save(tmp_path / "g.png", gray)).shape == (10, 12)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    bgr = read_image(_save(tmp_path / "c.png", rgb))
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert read_image(_save(tmp_path / "a.png", rgba)).shape == (10, 12, 3)
    # A palette image whose palette is gray counts as gray; a coloured palette does not.
    p_gray = Image.fromarray(gray).convert("P")
    p_gray.save(tmp_path / "pg.png")
    assert read_image(tmp_path / "pg.png").ndim == 2
    Image.fromarray(rgb).convert("P").save(tmp_path / "pc.png")
    assert read_image(tmp_path / "pc.png").shape == (10, 12, 3)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_faceset_subset(folder):
    root, _ = folder
    fs = load_image_folder(root)
    sub = fs.subset([4, 0])
    assert len(sub) == 2 and sub.sources == [fs.sources[4], fs.sources[0]]
    np.testing.assert_array_equal(sub.images[1], fs.images[0])
    np.testing.assert_array_equal(sub.labels, fs.labels[[4, 0]])


# --------------------------------------------------------------------------- fer2013.csv


def _csv_row(code, pixels: np.ndarray | str, usage="Training") -> str:
    px = pixels if isinstance(pixels, str) else " ".join(str(int(v)) for v in np.ravel(pixels))
    return f"{code},{px},{usage}" if usage is not None else f"{code},{px}"


def _write_csv(path: Path, rows: list[str], header="emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def csv_file(tmp_path):
    """One row per Kaggle code 0..6, each image a distinct random 48x48; plus val and test rows."""
    imgs = [_rand((48, 48), 100 + i) for i in range(10)]
    rows = [_csv_row(code, imgs[code], "Training") for code in range(7)]
    rows += [_csv_row(6, imgs[7], "PublicTest"), _csv_row(4, imgs[8], "PublicTest"),
             _csv_row(3, imgs[9], "PrivateTest")]
    return _write_csv(tmp_path / "fer2013.csv", rows), imgs


def test_csv_codes_mapped_by_name(csv_file):
    path, imgs = csv_file
    fs = load_fer2013_csv(path, "train")
    assert len(fs) == 7 and fs.classes == EMOTIONS
    assert fs.labels.tolist() == [KAGGLE_CODE_TO_INDEX[c] for c in range(7)]
    assert fs.labels[6] == EMOTIONS.index("neutral") == 4  # code 6 is neutral
    assert fs.labels[4] == EMOTIONS.index("sad") == 5  # code 4 is sad
    assert fs.labels[5] == EMOTIONS.index("surprise") == 6
    for i in range(7):
        np.testing.assert_array_equal(fs.images[i], imgs[i])
    assert fs.images.dtype == np.uint8 and fs.labels.dtype == np.int64


def test_csv_split_selection(csv_file):
    path, imgs = csv_file
    val = load_fer2013_csv(path, "val")
    assert val.labels.tolist() == [4, 5]  # codes 6 (neutral) and 4 (sad)
    np.testing.assert_array_equal(val.images[0], imgs[7])
    assert val.sources == [f"{path}:9", f"{path}:10"]  # header is row 1
    test = load_fer2013_csv(path, "test")
    assert test.labels.tolist() == [3] and test.sources == [f"{path}:11"]
    everything = load_fer2013_csv(path)
    assert len(everything) == 10
    assert everything.sources[0] == f"{path}:2"


def test_csv_bad_split_name(csv_file):
    path, _ = csv_file
    with pytest.raises(DataError, match="split"):
        load_fer2013_csv(path, "dev")


def test_csv_resizes_other_sizes(tmp_path):
    cv2 = _cv2()
    small = _rand((24, 24), 5)
    big = _rand((96, 96), 6)
    path = _write_csv(tmp_path / "f.csv", [_csv_row(0, small), _csv_row(1, big)])
    fs = load_fer2013_csv(path, size=(48, 48))
    assert fs.images.shape == (2, 48, 48)
    ref = cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(fs.images[1].astype(int) - ref.astype(int)).max() <= 1
    fs32 = load_fer2013_csv(path, size=(32, 32))
    assert fs32.images.shape == (2, 32, 32)


@pytest.mark.parametrize(
    "bad_row, words",
    [
        (_csv_row(3, " ".join(["7"] * 2303)), ["2303 pixel values"]),
        (_csv_row(7, " ".join(["7"] * 2304)), ["7"]),
        (_csv_row(-1, " ".join(["7"] * 2304)), ["-1"]),
        (_csv_row("x", " ".join(["7"] * 2304)), ["'x'"]),
        (_csv_row(2, " ".join(["256"] * 2304)), ["0..255"]),
        (_csv_row(2, " ".join(["-3"] * 2304)), ["0..255"]),
        (_csv_row(2, " ".join(["1.5"] * 2304)), ["1.5"]),
        (_csv_row(2, ""), ["0 pixel values"]),
    ],
)
def test_csv_bad_rows_reported_with_file_and_row(tmp_path, bad_row, words):
    good = _csv_row(3, _rand((48, 48), 1))
    path = _write_csv(tmp_path / "f.csv", [good, bad_row, good])
    with pytest.raises(DataError) as info:
        load_fer2013_csv(path)
    msg = str(info.value)
    assert f"{path}:3" in msg, msg
    assert f"{path}:2" not in msg and f"{path}:4" not in msg
    for w in words:
        assert w in msg, (w, msg)
    with pytest.warns(UserWarning, match=rf"(?s)skipped 1 .*{re.escape(str(path))}:3"):
        fs = load_fer2013_csv(path, skip_corrupt=True)
    assert fs.sources == [f"{path}:2", f"{path}:4"]


def test_csv_many_bad_rows_are_summarised(tmp_path):
    rows = [_csv_row(9, "1 2 3 4") for _ in range(25)] + [_csv_row(0, _rand((48, 48), 0))]
    path = _write_csv(tmp_path / "f.csv", rows)
    with pytest.raises(DataError, match=r"(?s)25 unreadable.*and 5 more") as info:
        load_fer2013_csv(path)
    assert f"{path}:21" in str(info.value) and f"{path}:22" not in str(info.value)


def test_csv_unknown_usage_only_matters_when_splitting(tmp_path):
    path = _write_csv(tmp_path / "f.csv", [_csv_row(0, _rand((48, 48), 0)),
                                           _csv_row(1, _rand((48, 48), 1), "Holdout")])
    assert len(load_fer2013_csv(path)) == 2
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: unknown Usage 'Holdout'"):
        load_fer2013_csv(path, "train")


def test_csv_missing_columns_and_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_fer2013_csv(tmp_path / "missing.csv")
    path = _write_csv(tmp_path / "a.csv", ["1 2 3 4,Training"], header="pixels,Usage")
    with pytest.raises(DataError, match="emotion"):
        load_fer2013_csv(path)
    path = _write_csv(tmp_path / "b.csv", [_csv_row(0, "1 2 3 4", None)], header="emotion,pixels")
    assert load_fer2013_csv(path).labels.tolist() == [0]  # no Usage needed without a split
    with pytest.raises(DataError, match="Usage"):
        load_fer2013_csv(path, "train")


def test_csv_no_rows_for_split(tmp_path):
    path = _write_csv(tmp_path / "f.csv", [_csv_row(0, _rand((48, 48), 0), "Training")])
    with pytest.raises(DataError, match="no usable rows for split 'test'"):
        load_fer2013_csv(path, "test")


def test_csv_short_row_is_a_data_error(tmp_path):
    path = _write_csv(tmp_path / "f.csv", [_csv_row(0, _rand((48, 48), 0)), "3"])
    with pytest.raises(DataError, match=re.escape(f"{path}:3")):
        load_fer2013_csv(path)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_csv_dispatch(csv_file):
    path, _ = csv_file
    fs = load_dataset(path, "val")
    ref = load_fer2013_csv(path, "val")
    np.testing.assert_array_equal(fs.images, ref.images)
    assert fs.labels.tolist() == ref.labels.tolist() and fs.sources == ref.sources
    assert len(load_dataset(str(path))) == 10


def test_load_dataset_split_folders(tmp_path):
    _save(tmp_path / "train" / "happy" / "a.png", _rand((48, 48), 1))
    _save(tmp_path / "train" / "sad" / "b.png", _rand((48, 48), 2))
    _save(tmp_path / "val" / "fear" / "c.png", _rand((48, 48), 3))
    train = load_dataset(tmp_path, "train")
    assert sorted(train.labels.tolist()) == [3, 5]
    val = load_dataset(tmp_path, "val", size=(32, 32))
    assert val.labels.tolist() == [2] and val.images.shape == (1, 32, 32)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, "test")
    assert "'test'" in str(info.value) and "train" in str(info.value) and "val" in str(info.value)
    with pytest.raises(DataError, match="train"):  # the split folders are not class folders
        load_dataset(tmp_path)


def test_load_dataset_class_tree_without_splits(folder):
    root, arrays = folder
    assert len(load_dataset(root)) == len(arrays)
    assert len(load_dataset(root, "train")) == len(arrays)  # no split folders: the tree itself


def test_load_dataset_passes_kwargs(folder):
    root, _ = folder
    assert len(load_dataset(root, limit_per_class=1)) == 3


def test_load_dataset_csv_accepts_limit_per_class(csv_file):
    path, _ = csv_file
    assert len(load_dataset(path, "train", size=(48, 48), limit_per_class=None)) == 7
    fs = load_dataset(path, None, limit_per_class=1)
    assert max(fs.counts().values()) == 1


def test_errors_are_fer_edge_errors():
    assert issubclass(DataError, FerEdgeError)


# --------------------------------------------------------------------------- the real dataset


@pytest.mark.dataset
def test_real_fer2013_test_split_reads(fer2013):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs = load_image_folder(fer2013 / "test", limit_per_class=3)
    assert fs.images.shape == (21, 48, 48) and fs.images.dtype == np.uint8
    assert fs.counts() == {c: 3 for c in EMOTIONS}
    assert all(Path(s).is_file() for s in fs.sources)
    assert fs.images.std() > 10  # real faces, not blank frames
    via_dispatch = load_dataset(fer2013, "test", limit_per_class=3)
    np.testing.assert_array_equal(via_dispatch.images, fs.images)


def test_jpeg_walk_holds_no_state_for_a_header_claiming_billions_of_pixels(tmp_path):
    """A progressive JPEG's header may claim 60000 x 60000 px in a few KB: the walk keeps per-block
    state, so it must not size that state from the header; the reader refuses the size instead."""
    import io

    from PIL import Image

    from fer_edge.jpeg_check import check_jpeg

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG", progressive=True)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    assert check_jpeg(bytes(data)) is None  # not walked
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"60000x60000 px|3600000000 pixels"):  # ours, or Pillow's bomb check
        read_image(tmp_path / "huge.jpg")
