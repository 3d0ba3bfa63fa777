"""Issue 21: images, bundles, caches and special files, tried as an attacker and a careless user would.
Each case gets the right answer or a clear refusal with the README's exit code: no traceback, no
hang, memory bounded. Built on the packaged `tiny` bundle and the sample faces (no torch needed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fer_edge
from fer_edge.bundle import MANIFEST, PACKAGED_DIR, Bundle, zip_bundle
from fer_edge.cli import main
from fer_edge.data import read_image
from fer_edge.demo import sample_faces
from fer_edge.errors import BundleError, DataError
from fer_edge.jpeg_check import check_jpeg

from conftest import REPO  # noqa: E402

HAPPY = next(p for p in sample_faces() if p.name.startswith("happy"))
DEEP = 100_000  # deeper than Python's recursion limit: json.loads raises RecursionError on it


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # where an unusable cache falls back to
    (tmp_path / "tmp").mkdir()
    return tmp_path / "cache"


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A private copy of the packaged default bundle, to edit."""
    return Path(shutil.copytree(PACKAGED_DIR / "tiny", tmp_path / "tiny"))


def edit_manifest(root: Path, fn) -> None:
    d = json.loads((root / MANIFEST).read_text())
    fn(d)
    (root / MANIFEST).write_text(json.dumps(d))


def predict_exit(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# --- 1. images deeper than 8 bits: rescaled by their range, never clipped -----------------------------------

def _gray8() -> np.ndarray:
    return np.asarray(Image.open(HAPPY).convert("L"))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_images_are_rescaled_not_clipped(tmp_path, fmt):
    gray = _gray8()
    path = tmp_path / f"happy16.{fmt.lower()}"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path, format=fmt)  # 255 -> 65535: the same picture
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(path), gray)


def test_16_bit_pgm_is_rescaled_too(tmp_path):
    gray = _gray8()
    path = tmp_path / "happy16.pgm"
    h, w = gray.shape
    path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + (gray.astype(">u2") * 257).tobytes())
    np.testing.assert_array_equal(read_image(path), gray)


def test_float_image_in_0_1_is_scaled_to_0_255(tmp_path):
    gray = _gray8()
    path = tmp_path / "happy-float.tiff"
    Image.fromarray(gray.astype(np.float32) / 255).save(path)
    np.testing.assert_array_equal(read_image(path), gray)  # was all black: clipped to 0 and 1


@pytest.mark.parametrize("array,match", [
    (np.full((48, 48), 300.0, np.float32), r"float image with values in 300\.\.300"),
    (np.arange(48 * 48, dtype=np.int32).reshape(48, 48) * 1000, "32-bit integer image"),
])
def test_deep_images_of_unknown_range_are_refused(tmp_path, array, match):
    path = tmp_path / "deep.tiff"
    Image.fromarray(array).save(path)
    with pytest.raises(DataError, match=match):
        read_image(path)


# --- 2. damaged JPEG data: progressive files and every size are checked -----------------------------------

def _flip(data: bytes, at: float, n: int = 16) -> bytes:
    """n bytes of the entropy-coded data XOR-ed, `at` (a fraction) of the way into it."""
    out = bytearray(data)
    sos = out.rindex(b"\xff\xda") if at > 0.5 else out.index(b"\xff\xda")
    start = sos + 20 + int((len(out) - sos - 40) * at)
    for k in range(n):
        out[start + k] ^= 0x5A
    return bytes(out)


def _jpeg(image: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_progressive_jpeg_with_damaged_data_is_refused(tmp_path):
    image = np.asarray(Image.open(HAPPY).convert("RGB").resize((192, 192)))
    clean = _jpeg(image, quality=90, progressive=True)
    assert check_jpeg(clean) == ""  # walked, and intact
    path = tmp_path / "progressive-damaged.jpg"
    path.write_bytes(_flip(clean, 0.3))
    with Image.open(path) as im:
        im.load()  # Pillow decodes it without a word
    with pytest.raises(DataError, match="corrupt JPEG data"):
        read_image(path)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_progressive_jpegs_walk_clean_in_every_layout(subsampling):
    rng = np.random.default_rng(subsampling)
    for size in (17, 64, 131):
        image = rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)
        for quality in (40, 95):
            assert check_jpeg(_jpeg(image, quality=quality, progressive=True, subsampling=subsampling)) == ""


def test_jpeg_larger_than_4_mp_is_checked(tmp_path):
    face = Image.open(HAPPY).convert("L").resize((256, 256))
    image = np.tile(np.asarray(face), (9, 8))  # 2304 x 2048 = 4.7 MP
    clean = _jpeg(image, quality=75)
    assert check_jpeg(clean) == ""
    path = tmp_path / "large-damaged.jpg"
    path.write_bytes(_flip(clean, 0.5))
    with pytest.raises(DataError, match="corrupt JPEG data"):
        read_image(path)


# --- 3 and 4. an edited manifest is refused at load, with exit 3 -------------------------------------------

def _swap(d):
    labels = d["labels"]
    i, j = labels.index("happy"), labels.index("sad")
    labels[i], labels[j] = labels[j], labels[i]


@pytest.mark.parametrize("edit,match", [
    (_swap, "manifest identity"),
    (lambda d: d.update(labels=["happy"] * 7), "labels repeat"),
    (lambda d: d.update(labels=d["labels"][:6]), "manifest identity"),
    (lambda d: d.update(labels=d["labels"] + ["contempt"]), "manifest identity"),
    (lambda d: d["input"].update(size=[64, 64]), "manifest identity"),
])
def test_edited_manifest_is_refused_at_load_with_exit_3(tiny, edit, match, capsys):
    edit_manifest(tiny, edit)
    with pytest.raises(BundleError, match=match):
        Bundle.open(tiny)
    code, out, err = predict_exit(["predict", str(HAPPY), "--model", str(tiny), "--backend", "onnxruntime"], capsys)
    assert code == 3 and out == "" and match in err
    assert "pip install" not in err  # not reported as a missing backend


def test_unstamped_artifact_is_still_checked_against_the_graph(tiny, monkeypatch):
    """An export older than the identity digest: the graph's own output size catches a label edit."""
    from fer_edge import bundle_check

    real = bundle_check.read_info

    def without_stamp(path, fmt):
        info = real(path, fmt)
        if info is not None:
            info.stamp = {}
        return info

    monkeypatch.setattr(bundle_check, "read_info", without_stamp)
    edit_manifest(tiny, lambda d: d.update(labels=d["labels"] + ["contempt"]))
    with pytest.raises(BundleError, match="logits output has 7 values per crop, the manifest has 8 labels"):
        Bundle.open(tiny)
    edit_manifest(tiny, lambda d: d.update(labels=d["labels"][:7]) or d["input"].update(size=[64, 64]))
    with pytest.raises(BundleError, match="input 'input' is N x 1 x 48 x 48"):
        Bundle.open(tiny)


@pytest.mark.parametrize("version", [0, -5])
def test_schema_versions_below_1_are_refused(tiny, version):
    edit_manifest(tiny, lambda d: d.update(schema_version=version))
    with pytest.raises(BundleError, match=f"schema_version {version}"):
        Bundle.open(tiny)


@pytest.mark.parametrize("value", [float("nan"), -1.0])
def test_verify_fails_what_the_loader_refuses(tiny, value, capsys):
    edit_manifest(tiny, lambda d: d["temperature"].update(value=value))
    with pytest.raises(BundleError, match="temperature.value must be a positive finite number"):
        Bundle.open(tiny)
    code, out, err = predict_exit(["verify", str(tiny)], capsys)
    assert code == 5 and "FAILED   manifest: temperature.value must be a positive finite number" in out


# --- 5. JSON nested too deep, unusable caches, special files as inputs, generators ------------------------

def test_deeply_nested_manifest_is_a_bundle_error(tiny, capsys):
    text = (tiny / MANIFEST).read_text()
    (tiny / MANIFEST).write_text(text[:-2] + ', "description_x": ' + "[" * DEEP + "]" * DEEP + "}\n")
    with pytest.raises(BundleError, match="nested 100001 levels deep"):
        Bundle.open(tiny)
    code, _, err = predict_exit(["verify", str(tiny)], capsys)
    assert code == 3 and "nested" in err


def test_huge_manifest_is_refused_before_parsing(tiny, capsys):
    text = (tiny / MANIFEST).read_text()
    (tiny / MANIFEST).write_text(text + " " * (5 << 20))  # valid JSON, 5 MB of padding
    code, _, err = predict_exit(["verify", str(tiny)], capsys)
    assert code == 3 and "larger than" in err


def _selection_json(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    return cache / "selection.json"


def test_deeply_nested_selection_cache_is_ignored_and_rewritten(private_cache, caplog):
    path = _selection_json(private_cache)
    path.write_text("[" * DEEP + "]" * DEEP)
    rec = fer_edge.Recognizer(None, "auto")
    assert rec.predict(read_image(HAPPY)).label == "happy"
    assert "ignoring unreadable selection cache" in caplog.text
    assert "entries" in json.loads(path.read_text())  # the next run reads a sound cache again


def test_selection_cache_that_is_a_folder_leaves_no_temporary_file(private_cache):
    _selection_json(private_cache).mkdir()
    fer_edge.Recognizer(None, "auto")
    assert not list(private_cache.glob("selection.json.*"))


@pytest.mark.parametrize("cache", ["file", "unwritable"])
def test_zip_bundle_with_an_unusable_cache_falls_back_to_a_temporary_folder(tmp_path, monkeypatch, cache):
    z = zip_bundle(PACKAGED_DIR / "tiny", tmp_path / "tiny.zip")
    if cache == "file":
        where = tmp_path / "cache-file"
        where.write_text("a file where the cache folder should be")
    else:
        where = Path("/sys/kernel/fer_edge_cache")  # read-only even for root
    monkeypatch.setenv("FER_EDGE_CACHE", str(where))
    with pytest.warns(UserWarning, match="cannot be used"):
        b = Bundle.open(z)
    assert b.root.is_relative_to(tmp_path / "tmp") and b.name == "tiny"


def test_zip_bomb_is_refused_before_extracting(tmp_path, private_cache, monkeypatch):
    from fer_edge import bundle

    assert bundle.MAX_UNZIPPED_BYTES < 1 << 30  # the bomb: a 4 MB zip holding a 1 GiB member
    monkeypatch.setattr(bundle, "MAX_UNZIPPED_BYTES", 32 << 20)  # the same bomb, smaller, to build it fast
    z = tmp_path / "bomb.zip"
    shutil.copy(zip_bundle(PACKAGED_DIR / "tiny", tmp_path / "tiny.zip"), z)
    with zipfile.ZipFile(z, "a", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("pad.bin", "w") as f:
        block = bytes(1 << 20)
        for _ in range(40):  # 40 MiB of zeros, 40 KB compressed
            f.write(block)
    assert z.stat().st_size < 4 << 20
    with pytest.raises(BundleError, match="refused before extracting"):
        Bundle.open(z)
    assert not any(p.is_file() for p in private_cache.rglob("*"))  # nothing unpacked


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_special_files_as_inputs_are_refused_and_the_good_file_predicted(tmp_path, special, capsys):
    if special == "fifo":
        special = tmp_path / "pipe.jpg"
        os.mkfifo(special)
    elif special == "folder":
        special = tmp_path / "folder.jpg"
        special.mkdir()
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        run=predict_exit(["predict", str(special), str(HAPPY), "--backend", "onnxruntime"], capsys)), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "predict hung on a special file"
    code, out, err = result["run"]
    assert code == 1 and out.split("\t")[:2] == [str(HAPPY), "happy"]
    assert f"{special} is" in err and ("regular" in err or "folder" in err)


def test_oversized_file_is_refused_before_reading(tmp_path):
    from fer_edge.data import MAX_IMAGE_BYTES

    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(DataError, match="larger than 64 MiB"):
        read_image(big)


def test_predict_batch_takes_a_generator():
    rec = fer_edge.Recognizer(None, "onnxruntime")
    crops = [read_image(p) for p in sample_faces()[:3]]
    by_generator = rec.predict_batch(c for c in crops)
    assert [p.label for p in by_generator] == [p.label for p in rec.predict_batch(crops)]


# --- 8. leftovers and pipes ---------------------------------------------------------------------------------

def test_killed_exports_leftovers_are_cleaned_by_the_next_export_of_that_folder(tmp_path):
    from fer_edge.export.stages import clean_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "my-model"
    stale = tmp_path / f".my-model.{dead.pid}-0123abcd.partial"
    live = tmp_path / f".my-model.{os.getpid()}-0123abcd.partial"
    moved_aside = tmp_path / f".my-model.old-{dead.pid}"
    for d in (stale, live, moved_aside):
        d.mkdir()
    (moved_aside / MANIFEST).write_text("{}")
    notes = clean_stale(out)
    assert not stale.exists() and live.exists()
    assert (out / MANIFEST).is_file() and not moved_aside.exists()  # the previous bundle put back
    assert len(notes) == 2


def test_predict_into_a_closed_pipe_ends_quietly(tmp_path):
    cmd = [sys.executable, "-m", "fer_edge.cli", "predict", str(HAPPY), "--json", "--backend", "onnxruntime"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_EDGE_CACHE": str(tmp_path / "cache")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # the reader is gone before the first line, as `| head -0` leaves it
    err = p.stderr.read().decode()
    assert p.wait(120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
