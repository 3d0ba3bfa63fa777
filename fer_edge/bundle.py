"""A bundle: a folder (or the same tree zipped) holding manifest.json and the files it lists.

Opening checks every listed file's sha256; nothing is loaded from a bundle that fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BundleError
from .jsonfile import read_json
from .manifest import Artifact, Manifest

MANIFEST = "manifest.json"
MODEL_CARD = "MODEL_CARD.md"
PACKAGED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "tiny"
MAX_MANIFEST_BYTES = 4 << 20  # ours are ~20 KB
MAX_UNZIPPED_BYTES = 512 << 20  # a bundle is a few MB; several GPUs' engines stay far below this


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, object]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def packaged_models() -> list[str]:
    if not PACKAGED_DIR.is_dir():
        return []
    return sorted(p.name for p in PACKAGED_DIR.iterdir() if (p / MANIFEST).is_file())


def resolve_model(model: str | os.PathLike | None) -> Path:
    """None -> the default packaged bundle; a packaged name -> that bundle; else a path."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model)
    if path.exists():
        return path
    if isinstance(model, str) and (PACKAGED_DIR / model / MANIFEST).is_file():
        return PACKAGED_DIR / model
    raise BundleError(f"no bundle at {str(model)!r} and no packaged model of that name; packaged: {packaged_models()}")


class Bundle:
    """An opened, verified bundle. `root` is a folder (a zip is unpacked to a cache first)."""

    def __init__(self, root: Path, manifest: Manifest, source: Path):
        self.root = root
        self.manifest = manifest
        self.source = source

    @classmethod
    def open(cls, model: str | os.PathLike | None = None, *, verify: bool = True) -> "Bundle":
        source = resolve_model(model)
        root = _unzip(source) if source.is_file() else source
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{source}: no {MANIFEST}; not a fer-edge bundle")
        try:
            data = read_json(manifest_path, error=BundleError, max_bytes=MAX_MANIFEST_BYTES)
        except OSError as e:
            raise BundleError(f"{manifest_path}: unreadable: {e}") from e
        manifest = Manifest.from_dict(data, where=str(manifest_path))
        bundle = cls(root, manifest, source)
        if verify:
            bundle.verify_files()
            bundle.check()
        return bundle

    def check(self) -> None:
        """The manifest against its artifacts' stamps and interfaces (fer_edge.bundle_check), as
        `verify` checks it too: an edited manifest is refused here, before it can mislabel."""
        from .bundle_check import check_bundle

        problems = check_bundle(self)
        if problems:
            raise BundleError(f"{self.source}: the manifest does not match its artifacts: " + "; ".join(problems))

    def verify_files(self) -> None:
        for rel, entry in self.manifest.files.items():
            path = self.file(rel)
            if not path.is_file():
                raise BundleError(f"{self.source}: file {rel!r} listed in the manifest is missing")
            digest = sha256_file(path)
            if digest != entry.get("sha256"):
                raise BundleError(
                    f"{self.source}: file {rel!r} was altered or corrupted "
                    f"(sha256 {digest[:12]}..., manifest says {str(entry.get('sha256'))[:12]}...)"
                )

    def file(self, rel: str) -> Path:
        """Absolute path of a bundle-relative path, refusing paths that leave the bundle."""
        _check_relative(rel, str(self.source))
        return self.root / rel

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.file(artifact.path)

    @property
    def name(self) -> str:
        return self.manifest.name

    def __repr__(self) -> str:
        arts = ", ".join(a.key() for a in self.manifest.artifacts)
        return f"Bundle({self.manifest.name!r}, artifacts=[{arts}], source={str(self.source)!r})"


def file_table(root: Path) -> dict[str, dict[str, object]]:
    """sha256 and size of every file under root but the manifest: what `manifest.files` lists."""
    return {p.relative_to(root).as_posix(): file_entry(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp")}


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file under root (except the manifest) into manifest.files and write it."""
    root = Path(root)
    manifest.files = file_table(root)
    for art in manifest.artifacts:
        if art.path not in manifest.files:
            raise BundleError(f"artifact {art.key()} points at {art.path!r}, which is not in {root}")
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST)
    return manifest


def zip_bundle(root: Path, out: Path) -> Path:
    """Zip a bundle folder; entries are relative to the bundle root."""
    root, out = Path(root), Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root).as_posix())
    os.replace(tmp, out)
    return out


def _check_relative(name: str, where: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise BundleError(f"{where}: entry {name!r} escapes the bundle folder")


def cache_dir() -> Path:
    base = os.environ.get("FER_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fer_edge")
    return Path(base)


def writable_cache(sub: str) -> Path:
    """cache_dir()/sub, created; where that cannot be written (read-only, a file in the way), a
    folder of this user's under the system's temporary folder instead, with a warning."""
    wanted = cache_dir() / sub
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK | os.X_OK):
            return wanted
        reason = "not writable"
    except OSError as e:
        reason = f"{type(e).__name__}: {e.strerror or e}"
    uid = os.getuid() if hasattr(os, "getuid") else None
    fallback = Path(tempfile.gettempdir()) / f"fer_edge-{uid if uid is not None else 'user'}" / sub
    try:
        fallback.parent.mkdir(mode=0o700, exist_ok=True)
        st = fallback.parent.lstat()  # another user's folder (or link) there is not ours to unpack into
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
            raise OSError("not this user's folder")
        fallback.mkdir(exist_ok=True)
    except OSError:
        fallback = Path(tempfile.mkdtemp(prefix="fer_edge-")) / sub
        fallback.mkdir()
    warnings.warn(f"fer_edge cache {wanted} cannot be used ({reason}); using {fallback} instead "
                  "(set FER_EDGE_CACHE to a writable folder)", stacklevel=3)
    return fallback


def _unzip(path: Path) -> Path:
    """Unpack a zipped bundle into the cache (keyed by the zip's hash) after checking every entry."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":  # a zip's first entry, but no directory at the end: cut short
            raise BundleError(f"{path} is a truncated or damaged zip file ({path.stat().st_size} bytes, no zip "
                              "directory at its end): download or copy it again")
        raise BundleError(f"{path}: neither a bundle folder nor a zip file")
    try:
        return _extract(path)
    except (zipfile.BadZipFile, EOFError) as e:  # a damaged entry (CRC, short data) inside a whole-looking zip
        raise BundleError(f"{path} is a truncated or damaged zip file ({e}): download or copy it again") from e


def _extract(path: Path) -> Path:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        for info in z.infolist():
            _check_relative(info.filename, str(path))
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise BundleError(f"{path}: entry {info.filename!r} is a symbolic link; bundles hold plain files")
        prefix = ""
        if MANIFEST not in names:
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
                prefix = next(iter(tops)) + "/"
            else:
                raise BundleError(f"{path}: no {MANIFEST} at the top of the zip")
        total = sum(info.file_size for info in z.infolist())
        if total > MAX_UNZIPPED_BYTES:
            raise BundleError(f"{path}: its entries unpack to {total:,} bytes, more than a bundle holds "
                              f"({MAX_UNZIPPED_BYTES:,}); refused before extracting")
        target = writable_cache("bundles") / sha256_file(path)[:32]
        if not (target / MANIFEST).is_file():
            tmp = Path(tempfile.mkdtemp(dir=target.parent))
            try:
                z.extractall(tmp)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp / prefix if prefix else tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target
