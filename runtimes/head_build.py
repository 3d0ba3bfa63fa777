"""Build a compiled tree head's C sources into the shared library for this machine, with CMake.

A build of a big forest takes minutes, so libraries are cached by the sha256 of their sources
(plus the platform tag and the ABI): re-exporting or re-building the same head reuses it.
The cache is `$FER_EDGE_CACHE/heads` (default `~/.cache/fer_edge/heads`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import FerEdgeError, RuntimeUnavailableError

NATIVE_DIR = Path(__file__).parent / "native"
ABI = 1  # FER_HEAD_ABI in native/fer_head.h
LIBRARY_NAMES = {"Windows": "fer_head.dll", "Darwin": "libfer_head.dylib"}


def platform_tag() -> str:
    """The key of `libraries` in a head's manifest entry: 'linux-x86_64', 'linux-aarch64', ..."""
    return f"{platform.system().lower()}-{platform.machine()}"


def library_name() -> str:
    return LIBRARY_NAMES.get(platform.system(), "libfer_head.so")


def sources_digest(src_dir: str | os.PathLike) -> str:
    """sha256 over the names and contents of every file in a head's source folder."""
    h = hashlib.sha256()
    for p in sorted(Path(src_dir).iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def default_cache() -> Path:
    from ..bundle import cache_dir

    return cache_dir() / "heads"


def cached_library(src_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The library already built from these sources for this platform, or None."""
    lib = _slot(src_dir, cache_dir) / library_name()
    return lib if lib.is_file() else None


def build_library(src_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                  jobs: int | None = None) -> Path:
    """Build (or reuse from the cache) the head library of a source folder; returns its cached path.

    Raises RuntimeUnavailableError when cmake or a C compiler is missing, FerEdgeError with the
    build log's tail when the build fails.
    """
    src = Path(src_dir)
    if not (src / "CMakeLists.txt").is_file() or not (src / "fer_head.c").is_file():
        raise FerEdgeError(f"{src} is not a head source folder (needs CMakeLists.txt, fer_head.c and the generated C)")
    slot = _slot(src, cache_dir)
    lib = slot / library_name()
    if lib.is_file():
        return lib
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeUnavailableError("building the compiled tree head needs cmake (>= 3.13) and a C99 compiler on "
                                      "PATH: apt install cmake gcc, or pip install cmake")
    slot.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=slot.parent))
    try:
        build = work / "build"
        jobs = jobs or os.cpu_count() or 1
        start = time.perf_counter()
        _run([cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], "configure")
        _run([cmake, "--build", str(build), "--parallel", str(jobs)], "build")
        seconds = time.perf_counter() - start
        built = next((p for p in build.rglob(library_name()) if p.is_file()), None)
        if built is None:
            raise FerEdgeError(f"the CMake build of {src} finished but produced no {library_name()}")
        out = work / "out"
        out.mkdir()
        shutil.copy2(built, out / library_name())
        (out / "build.json").write_text(json.dumps({
            "sources": str(src), "platform": platform_tag(), "abi": ABI, "seconds": round(seconds, 2),
            "jobs": jobs, "compiler": _compiler(build)}, indent=2) + "\n")
        try:
            os.replace(out, slot)
        except OSError:  # another process finished the same build first
            if not lib.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


def _slot(src_dir: str | os.PathLike, cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache()
    return root / f"{sources_digest(src_dir)[:32]}-{platform_tag()}-abi{ABI}"


def _run(cmd: list[str], step: str) -> None:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as e:
        raise RuntimeUnavailableError(f"could not run {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        if step == "configure" and "No CMAKE_C_COMPILER could be found" in proc.stdout:
            raise RuntimeUnavailableError(f"no C compiler found for the head build; install gcc or clang\n{tail}")
        raise FerEdgeError(f"head library {step} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _compiler(build: Path) -> str:
    cache = build / "CMakeCache.txt"
    for line in cache.read_text(errors="replace").splitlines() if cache.is_file() else ():
        if line.startswith("CMAKE_C_COMPILER:"):
            return line.split("=", 1)[1]
    return "unknown"
