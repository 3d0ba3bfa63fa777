"""fer_edge.bundle / manifest / formats: fake bundles built in tmp_path, opened as folders and zips."""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path

import pytest

from fer_edge import bundle as bundle_mod
from fer_edge.bundle import (
    MANIFEST,
    MODEL_CARD,
    Bundle,
    file_entry,
    packaged_models,
    resolve_model,
    sha256_file,
    write_manifest,
    zip_bundle,
)
from fer_edge.errors import BundleError, FerEdgeError, InputError
from fer_edge.formats import FORMATS, PRECISIONS, get_format
from fer_edge.labels import EMOTIONS
from fer_edge.manifest import FORMAT_NAME, SCHEMA_VERSION, Artifact, Manifest
from fer_edge.preprocess import InputSpec

ONNX_FP32 = FORMATS["onnx"].path("fp32")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FER_EDGE_CACHE", str(cache))
    return cache


def make_bundle(root: Path, *, name: str = "fake", extra_files: dict[str, bytes] | None = None) -> Manifest:
    root.mkdir(parents=True, exist_ok=True)
    (root / ONNX_FP32).parent.mkdir(parents=True, exist_ok=True)
    (root / ONNX_FP32).write_bytes(b"not really onnx \x00\x01\x02" * 10)
    (root / MODEL_CARD).write_text(f"# {name}\n\nA fake bundle for tests.\n")
    for rel, data in (extra_files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = Manifest(
        name=name,
        labels=list(EMOTIONS),
        input=InputSpec(),
        model={"arch": "tiny", "params": 1, "feature_dim": 8, "outputs": {"logits": "logits", "embedding": "embedding"}},
        artifacts=[Artifact("onnx", "fp32", ONNX_FP32)],
        files={},
        version="1.2.3",
    )
    return write_manifest(root, manifest)


def edit_manifest(root: Path, fn) -> None:
    d = json.loads((root / MANIFEST).read_text())
    fn(d)
    (root / MANIFEST).write_text(json.dumps(d))


@pytest.fixture
def bundle_dir(tmp_path):
    root = tmp_path / "bundle"
    make_bundle(root)
    return root


# --------------------------------------------------------------------------- writing


def test_write_manifest_hashes_every_file(bundle_dir):
    data = json.loads((bundle_dir / MANIFEST).read_text())
    assert data["format"] == FORMAT_NAME and data["schema_version"] == SCHEMA_VERSION
    assert set(data["files"]) == {ONNX_FP32, MODEL_CARD}  # the manifest does not list itself
    import hashlib

    blob = (bundle_dir / ONNX_FP32).read_bytes()
    assert data["files"][ONNX_FP32] == {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    assert file_entry(bundle_dir / ONNX_FP32)["sha256"] == sha256_file(bundle_dir / ONNX_FP32)
    assert not (bundle_dir / (MANIFEST + ".tmp")).exists()


def test_write_manifest_refuses_missing_artifact(tmp_path):
    root = tmp_path / "b"
    root.mkdir()
    (root / MODEL_CARD).write_text("x")
    m = Manifest(name="x", labels=["a"], input=InputSpec(), model={}, files={},
                 artifacts=[Artifact("onnx", "int8", FORMATS["onnx"].path("int8"))])
    with pytest.raises(BundleError, match="model.int8.onnx"):
        write_manifest(root, m)
    assert not (root / MANIFEST).exists()


# --------------------------------------------------------------------------- opening


def test_open_folder(bundle_dir):
    b = Bundle.open(bundle_dir)
    assert b.name == "fake" and b.root == bundle_dir and b.source == bundle_dir
    assert b.manifest.labels == list(EMOTIONS)
    assert b.manifest.input == InputSpec()
    assert b.manifest.version == "1.2.3"
    art = b.manifest.artifact("onnx", "fp32")
    assert art == Artifact("onnx", "fp32", ONNX_FP32) and art.key() == "onnx/fp32"
    assert b.manifest.artifact("onnx", "int8") is None
    assert b.artifact_path(art).read_bytes() == (bundle_dir / ONNX_FP32).read_bytes()
    assert "onnx/fp32" in repr(b) and "fake" in repr(b)
    assert Bundle.open(str(bundle_dir)).name == "fake"


def test_open_zip(bundle_dir, tmp_path, _private_cache):
    z = zip_bundle(bundle_dir, tmp_path / "fake.zip")
    assert z == tmp_path / "fake.zip" and zipfile.is_zipfile(z)
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted([MANIFEST, MODEL_CARD, ONNX_FP32])
    b = Bundle.open(z)
    assert b.source == z and b.name == "fake"
    assert _private_cache in b.root.parents  # unpacked into FER_EDGE_CACHE
    assert b.artifact_path(b.manifest.artifact("onnx", "fp32")).read_bytes() == (bundle_dir / ONNX_FP32).read_bytes()
    again = Bundle.open(z)
    assert again.root == b.root  # cached by the zip's hash
    leftovers = [p for p in b.root.parent.iterdir() if p != b.root]
    assert leftovers == []  # no temp folders left behind


def test_open_zip_with_single_top_folder(bundle_dir, tmp_path):
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                zf.write(p, "fake-1.2.3/" + p.relative_to(bundle_dir).as_posix())
    b = Bundle.open(z)
    assert (b.root / MANIFEST).is_file() and (b.root / ONNX_FP32).is_file()


def test_cache_follows_xdg_when_env_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_EDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bundle_mod.cache_dir() == tmp_path / "xdg" / "fer_edge"
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "c"))
    assert bundle_mod.cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------- refusals


def test_altered_file_is_named(bundle_dir):
    with open(bundle_dir / ONNX_FP32, "ab") as f:
        f.write(b"!")
    with pytest.raises(BundleError, match="altered") as info:
        Bundle.open(bundle_dir)
    assert ONNX_FP32 in str(info.value)
    assert Bundle.open(bundle_dir, verify=False).name == "fake"  # verification can be skipped explicitly


def test_altered_model_card_is_refused(bundle_dir):
    (bundle_dir / MODEL_CARD).write_text("# edited\n")
    with pytest.raises(BundleError, match=MODEL_CARD):
        Bundle.open(bundle_dir)


def test_missing_file(bundle_dir):
    (bundle_dir / MODEL_CARD).unlink()
    with pytest.raises(BundleError, match=f"{MODEL_CARD}.*missing"):
        Bundle.open(bundle_dir)


def test_altered_file_inside_zip(bundle_dir, tmp_path):
    (bundle_dir / ONNX_FP32).write_bytes(b"swapped")
    z = zip_bundle(bundle_dir, tmp_path / "x.zip")
    with pytest.raises(BundleError, match="altered") as info:
        Bundle.open(z)
    assert ONNX_FP32 in str(info.value) and str(z) in str(info.value)


def test_tampering_with_the_unpacked_cache_is_caught(bundle_dir, tmp_path):
    z = zip_bundle(bundle_dir, tmp_path / "x.zip")
    root = Bundle.open(z).root
    (root / ONNX_FP32).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="altered"):
        Bundle.open(z)


def test_newer_schema_version_says_upgrade(bundle_dir):
    edit_manifest(bundle_dir, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match="upgrade") as info:
        Bundle.open(bundle_dir)
    assert str(SCHEMA_VERSION + 1) in str(info.value)


@pytest.mark.parametrize("value", [None, "1", 1.0])
def test_schema_version_must_be_an_integer(bundle_dir, value):
    edit_manifest(bundle_dir, lambda d: d.update(schema_version=value))
    with pytest.raises(BundleError, match="schema_version"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize("value", ["onnx-bundle", None, ""])
def test_wrong_format_field(bundle_dir, value):
    edit_manifest(bundle_dir, lambda d: d.update(format=value))
    with pytest.raises(BundleError, match="not a fer-edge bundle"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize("field", ["name", "labels", "input", "model", "artifacts", "files"])
def test_missing_required_field(bundle_dir, field):
    edit_manifest(bundle_dir, lambda d: d.pop(field))
    with pytest.raises(BundleError, match=f"missing required fields.*'{field}'"):
        Bundle.open(bundle_dir)


def test_artifact_path_not_in_files(bundle_dir):
    def add(d):
        d["artifacts"].append({"format": "onnx", "precision": "int8", "path": "backbone/onnx/model.int8.onnx"})

    edit_manifest(bundle_dir, add)
    with pytest.raises(BundleError, match=r"onnx/int8.*not listed in files"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"format": "tflite", "precision": "fp32", "path": ONNX_FP32}, "unknown format"),
        ({"format": "onnx", "precision": "bf16", "path": ONNX_FP32}, "unknown format or precision"),
        ({"format": "onnx", "precision": "fp32"}, "needs format, precision and path"),
        ("onnx/fp32", "needs format, precision and path"),
    ],
)
def test_bad_artifact_entries(bundle_dir, entry, match):
    edit_manifest(bundle_dir, lambda d: d.update(artifacts=[entry]))
    with pytest.raises(BundleError, match=match):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize("labels", [[], "angry", [1, 2], None])
def test_bad_labels(bundle_dir, labels):
    edit_manifest(bundle_dir, lambda d: d.update(labels=labels))
    with pytest.raises(BundleError, match="labels"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize("patch", [{"interpolation": "cubic"}, {"channels": 3}, {"colour": "gray"}])
def test_bad_input_spec(bundle_dir, patch):
    edit_manifest(bundle_dir, lambda d: d["input"].update(patch))
    with pytest.raises(BundleError, match="bad input spec"):
        Bundle.open(bundle_dir)


def test_manifest_not_json_or_not_object(bundle_dir):
    (bundle_dir / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable JSON"):
        Bundle.open(bundle_dir)
    (bundle_dir / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BundleError, match="JSON object"):
        Bundle.open(bundle_dir)


def test_folder_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path / "empty")


def _zip_with(path: Path, entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def _bundle_entries(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("evil", ["../evil.txt", "backbone/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt",
                                  "..\\evil.txt"])
def test_zip_slip_refused(bundle_dir, tmp_path, _private_cache, evil):
    z = _zip_with(tmp_path / "slip.zip", {**_bundle_entries(bundle_dir), evil: b"pwned"})
    with pytest.raises(BundleError, match="escapes the bundle folder") as info:
        Bundle.open(z)
    assert repr(evil) in str(info.value)
    assert not (tmp_path / "evil.txt").exists() and not _private_cache.exists()


def test_zip_symlink_refused(bundle_dir, tmp_path):
    z = _zip_with(tmp_path / "link.zip", _bundle_entries(bundle_dir), symlinks=("backbone/link",))
    with pytest.raises(BundleError, match="symbolic link"):
        Bundle.open(z)


def test_zip_without_manifest(bundle_dir, tmp_path):
    entries = _bundle_entries(bundle_dir)
    del entries[MANIFEST]
    with pytest.raises(BundleError, match="no manifest.json at the top"):
        Bundle.open(_zip_with(tmp_path / "nomanifest.zip", entries))
    deep = {f"a/b/{k}": v for k, v in _bundle_entries(bundle_dir).items()}
    with pytest.raises(BundleError, match="no manifest.json at the top"):
        Bundle.open(_zip_with(tmp_path / "deep.zip", deep))


def test_file_that_is_not_a_zip(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"plain file")
    with pytest.raises(BundleError, match="neither a bundle folder nor a zip"):
        Bundle.open(f)


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "C:/x", "..\\x", "backbone/../../x"])
def test_bundle_file_refuses_escaping_paths(bundle_dir, rel):
    b = Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match="escapes"):
        b.file(rel)
    with pytest.raises(BundleError, match="escapes"):
        b.artifact_path(Artifact("onnx", "fp32", rel))


def test_bundle_file_allows_inner_paths(bundle_dir):
    b = Bundle.open(bundle_dir)
    assert b.file("backbone/onnx/model.fp32.onnx") == bundle_dir / ONNX_FP32
    assert b.file("./MODEL_CARD.md").read_text().startswith("# fake")


def test_manifest_listing_escaping_file_refused(bundle_dir, tmp_path):
    (tmp_path / "outside.bin").write_bytes(b"secret")

    def add(d):
        d["files"]["../outside.bin"] = file_entry(tmp_path / "outside.bin")
        d["artifacts"] = [{"format": "onnx", "precision": "fp32", "path": "../outside.bin"}]

    edit_manifest(bundle_dir, add)
    with pytest.raises(BundleError, match="escapes"):
        Bundle.open(bundle_dir)


# --------------------------------------------------------------------------- packaged models


def test_resolve_model_error_lists_packaged_names(tmp_path, monkeypatch):
    packaged = tmp_path / "models"
    make_bundle(packaged / "tiny", name="tiny")
    make_bundle(packaged / "small", name="small")
    (packaged / "not_a_bundle").mkdir()
    monkeypatch.setattr(bundle_mod, "PACKAGED_DIR", packaged)
    monkeypatch.chdir(tmp_path)
    assert packaged_models() == ["small", "tiny"]
    with pytest.raises(BundleError) as info:
        resolve_model("huge")
    msg = str(info.value)
    assert "'huge'" in msg and "small" in msg and "tiny" in msg
    assert resolve_model("small") == packaged / "small"
    assert resolve_model(None) == packaged / bundle_mod.DEFAULT_MODEL
    assert Bundle.open().name == "tiny"
    assert Bundle.open("small").name == "small"


def test_resolve_model_prefers_existing_paths(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_mod, "PACKAGED_DIR", tmp_path / "no-models")
    assert packaged_models() == []
    assert resolve_model(bundle_dir) == bundle_dir
    with pytest.raises(BundleError, match=r"packaged: \[\]"):
        resolve_model(str(tmp_path / "missing"))


def test_lazy_exports():
    import fer_edge

    assert fer_edge.Bundle is Bundle and fer_edge.Manifest is Manifest and fer_edge.InputSpec is InputSpec
    assert fer_edge.packaged_models is packaged_models
    with pytest.raises(AttributeError):
        fer_edge.NoSuchThing  # noqa: B018


# --------------------------------------------------------------------------- manifest round trip


def test_manifest_round_trip_keeps_unknown_keys(bundle_dir):
    d = json.loads((bundle_dir / MANIFEST).read_text())
    d["future_field"] = {"x": 1}
    m = Manifest.from_dict(d)
    assert m.extra == {"future_field": {"x": 1}}
    out = m.to_dict()
    assert out["future_field"] == {"x": 1}
    assert json.loads(m.to_json()) == d
    assert Manifest.from_dict(json.loads(m.to_json())).to_dict() == out


def test_manifest_older_schema_accepted(bundle_dir):
    d = json.loads((bundle_dir / MANIFEST).read_text())
    for version in range(1, SCHEMA_VERSION + 1):  # every version written so far (0 and below never were)
        d["schema_version"] = version
        assert Manifest.from_dict(d).schema_version == version


def test_manifest_where_is_in_messages():
    with pytest.raises(BundleError, match="^somewhere.json: expected a JSON object"):
        Manifest.from_dict([], where="somewhere.json")


# --------------------------------------------------------------------------- formats and errors


def test_format_paths_and_lookup():
    assert ONNX_FP32 == "backbone/onnx/model.fp32.onnx"
    assert FORMATS["openvino"].path("int8") == "backbone/openvino/model.int8.xml"
    assert FORMATS["openvino"].companions == (".bin",)
    assert FORMATS["tensorrt"].needs_gpu and FORMATS["tensorrt"].built_on_device
    assert not FORMATS["onnx"].needs_gpu
    assert all(set(f.precisions) <= set(PRECISIONS) for f in FORMATS.values())
    assert get_format("onnx") is FORMATS["onnx"]
    with pytest.raises(InputError, match="bf16"):
        FORMATS["onnx"].path("bf16")
    with pytest.raises(InputError, match="known formats"):
        get_format("tflite")


def test_every_format_row_agrees_with_its_backend():
    # The row is the one declaration of a format's backend and extra: the backend module it names
    # must register a backend of that name that loads this format, and say the same extra.
    from fer_edge.runtimes import BACKENDS

    for key, fmt in FORMATS.items():
        backend = BACKENDS[fmt.backend]
        assert (backend.format, backend.extra) == (key, fmt.extra), key
        assert backend.__module__ == f"fer_edge.runtimes.{fmt.backend}", key
        ref_format, _, ref_precision = fmt.reference_key().partition("/")
        assert ref_precision in FORMATS[ref_format].precisions and set(fmt.exporter_builds) <= set(fmt.precisions), key
        if fmt.exporter_builds:  # what export_bundle builds, a converter module of export/ builds
            assert callable(importlib.import_module(f"fer_edge.export.{fmt.converter}").convert), key


def test_error_hierarchy():
    from fer_edge import errors

    for name in ("InputError", "DataError", "BundleError", "RuntimeUnavailableError", "ExportError",
                 "AccuracyDropError", "ParityError"):
        assert issubclass(getattr(errors, name), FerEdgeError), name
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.AccuracyDropError, errors.ExportError)
    assert not issubclass(errors.BundleError, ValueError)
