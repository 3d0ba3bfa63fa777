"""What a new user hit first (issue 11, section 2), each on the packaged bundle (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fer_edge
from fer_edge import BundleError, InputError
from fer_edge.cli import main
from fer_edge.demo import sample_faces

from conftest import REPO  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def rec():
    return fer_edge.Recognizer(None, "onnxruntime", precision="fp32")


def corrupt_jpeg(src, dst) -> None:
    """Headers intact, entropy-coded data overwritten in the middle (what a bad sector or an
    interrupted copy leaves): Pillow still decodes it, into a garbled face."""
    data = bytearray(open(src, "rb").read())
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big") + 40
    data[start : start + 60] = bytes((i * 37 + 11) % 255 for i in range(60))
    open(dst, "wb").write(bytes(data))


# --- commands that need torch, in a core install ---------------------------------------------------------

@pytest.mark.parametrize("argv,extra", [
    (["train", "--list-recipes"], "train"),
    (["evaluate", "--checkpoint", "run/best.pt", "--data", "faces"], "train"),
    (["report", "run", "--data", "faces"], "train"),
    (["export", "run/best.pt", "--out", "bundle"], "export"),
])
def test_commands_that_need_torch_name_the_extra_and_exit_4(argv, extra, tmp_path):
    code = ("import sys; sys.modules['torch'] = None  # as if torch were not installed\n"
            "from fer_edge.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "FER_EDGE_CACHE": str(tmp_path)})
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and f"pip install 'fer-edge[{extra}]'" in done.stderr
    assert "needs torch" in done.stderr


# --- predict: bad files among good ones, corrupt JPEG data ------------------------------------------------

def test_predict_reports_each_bad_file_and_still_predicts_the_good_ones(tmp_path, capsys):
    good = str(sample_faces()[0])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    from PIL import Image

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tiny)
    assert main(["predict", good, str(text), good, str(tiny), "--backend", "onnxruntime"]) == 1
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [good, good]
    assert str(text) in err and f"{tiny} is 1x1 px" in err and "2 of 4 images could not be predicted" in err


def test_corrupt_jpeg_data_is_an_error_naming_the_file_unless_allowed(tmp_path, capsys):
    from fer_edge.data import read_image

    src = sample_faces()[0]
    bad = tmp_path / "damaged.jpg"
    corrupt_jpeg(src, bad)
    from PIL import Image

    with Image.open(bad) as im:
        im.load()  # the decoder says nothing: this is why fer_edge walks the data itself
    assert main(["predict", str(bad), "--backend", "onnxruntime"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: corrupt JPEG data" in err and "--allow-corrupt" in err
    assert main(["predict", str(bad), "--backend", "onnxruntime", "--allow-corrupt"]) == 0
    assert read_image(bad, check=False).shape == read_image(src).shape
    for path in sample_faces():  # the intact samples pass the same walk
        read_image(path)


def test_folder_loader_names_corrupt_jpegs_and_can_skip_them(tmp_path):
    from fer_edge.data import load_image_folder
    from fer_edge.errors import DataError

    root = tmp_path / "faces" / "happy"
    root.mkdir(parents=True)
    samples = sample_faces()[:3]
    for i, path in enumerate(samples[:2]):
        (root / f"{i}.jpg").write_bytes(path.read_bytes())
    corrupt_jpeg(samples[2], root / "2.jpg")
    with pytest.raises(DataError, match=r"2\.jpg: corrupt JPEG data"):
        load_image_folder(tmp_path / "faces")
    with pytest.warns(UserWarning, match=r"2\.jpg: corrupt JPEG data"):  # skipped, and said so
        assert len(load_image_folder(tmp_path / "faces", skip_corrupt=True).images) == 2


# --- crops the model cannot use ---------------------------------------------------------------------------

def test_crops_too_small_or_frame_sized_are_refused(rec):
    with pytest.raises(InputError, match=r"image is 1x1 px; a face crop needs at least 8x8 px"):
        rec.predict(np.zeros((1, 1), np.uint8))
    with pytest.raises(InputError, match=r"image is 4097x8 px, larger than any face crop.*predict_frame"):
        rec.predict(np.zeros((4097, 8), np.uint8))
    assert rec.predict(np.full((8, 8), 128, np.uint8)).label in fer_edge.EMOTIONS
    with pytest.raises(InputError, match=r"image\[1\] is 3x40 px"):
        rec.predict_batch([np.zeros((48, 48), np.uint8), np.zeros((3, 40), np.uint8)])


@pytest.mark.parametrize("image,hint,wrong", [
    (np.full((48, 48), 200, np.int16), "already in 0..255: img.astype(np.uint8)", "* 255"),
    (np.ones((48, 48), bool), "img.astype(np.uint8) * 255", "already"),
    (np.full((48, 48), 200.0, np.float32), "already in 0..255: np.rint(img).astype(np.uint8)", "* 255"),
    (np.full((48, 48), 0.5, np.float64), "in [0, 1]: (img * 255)", "already"),
    (np.full((48, 48), 4000, np.uint16), "span 4000..4000: rescale", "* 255"),
])
def test_dtype_hint_fits_the_values_and_a_single_image_is_not_image_0(rec, image, hint, wrong):
    with pytest.raises(InputError) as e:
        rec.predict(image)
    msg = str(e.value)
    assert msg.startswith(f"image has dtype {image.dtype}") and hint in msg and wrong not in msg
    assert "image[0]" not in msg


# --- bundles --------------------------------------------------------------------------------------------------

def test_truncated_zip_bundle_says_so(tmp_path):
    from fer_edge.bundle import PACKAGED_DIR, zip_bundle

    z = zip_bundle(PACKAGED_DIR / "tiny", tmp_path / "tiny.ferb.zip")
    data = z.read_bytes()
    cut = tmp_path / "cut.ferb.zip"
    cut.write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(cut)
    with pytest.raises(BundleError, match=r"cut\.ferb\.zip is a truncated or damaged zip file"):
        fer_edge.Recognizer(cut)
    assert main(["predict", str(sample_faces()[0]), "--model", str(cut)]) == 3


def test_readme_head_and_device_example_runs_on_the_packaged_model():
    # README: Recognizer(head=..., device=...) with what the packaged bundle ships; a missing head or
    # an absent GPU is a clear error, never a fallback
    import re

    readme = (REPO / "README.md").read_text()
    calls = re.findall(r"Recognizer\(([^()]*head=[^()]*)\)", readme)
    packaged = [c for c in calls if not c.lstrip().startswith('"')]  # no model named: the packaged one
    assert packaged, "the README shows no head= example on the packaged model"
    for call in packaged:
        rec = fer_edge.Recognizer(**dict(re.findall(r"(\w+)=\"([^\"]*)\"", call)))
        assert rec.predict(np.full((48, 48), 128, np.uint8)).label in fer_edge.EMOTIONS


def test_verify_says_exactly_which_identity_fields_the_packaged_artifacts_carry(tmp_path):
    import shutil

    from fer_edge.bundle import PACKAGED_DIR
    from fer_edge.verify import verify

    report = verify(PACKAGED_DIR / "tiny")
    artifacts = [c for c in report.checks if c.name.startswith("artifact")]
    assert report.ok and len(artifacts) == 4
    for c in artifacts:
        assert "no identity stamp" not in c.detail
        assert "identity stamped" in c.detail or (
            "carries name, version, labels, input spec, matching the manifest, but no manifest digest" in c.detail)
    # a stamp that contradicts the manifest is a failure, digest or not
    copy = shutil.copytree(PACKAGED_DIR / "tiny", tmp_path / "renamed")
    m = json.loads((copy / "manifest.json").read_text())
    m["name"] = "renamed"
    (copy / "manifest.json").write_text(json.dumps(m))
    bad = [c for c in verify(copy).checks if c.name.startswith("artifact")]
    # the shipped artifacts carry the manifest digest, which catches the edit first; without one the
    # stamped name would
    assert bad and all(c.status == "failed" and ("stamped name 'tiny' differs from the manifest's" in c.detail
                                                 or "the file belongs to another bundle" in c.detail) for c in bad)
