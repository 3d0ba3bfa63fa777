"""ncnn backend (CPU): the artifact is `model.<prec>.param` + `.bin`, converted by `pnnx`, with the
sidecar `.json` the exporter writes (export/onnx2ncnn.py): the identity stamp, which ncnn blob is
which graph input/output, and the sha256 of the param and bin it was checked with.

ncnn's extractor takes one CHW image, so a batch is run crop by crop; the Net is read-only once
loaded and each call makes its own extractor, so one instance serves every thread.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import sha256_file as _sha256
from ..errors import BundleError, FerEdgeError, InputError, RuntimeUnavailableError
from ..jsonfile import read_json
from . import devices
from .base import Backend, Probe, register_backend

PARAM_MAGIC = "7767517"


def read_param(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(layer type, bottom blobs, top blobs) of each layer of an ncnn text param file."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    if not lines or lines[0].strip() != PARAM_MAGIC or len(lines) < 2:
        raise BundleError(f"{path}: not an ncnn param file (first line is not {PARAM_MAGIC})")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        try:
            kind, nb, nt = parts[0], int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise BundleError(f"{path}: malformed layer line {line[:80]!r}") from None
        layers.append((kind, parts[4:4 + nb], parts[4 + nb:4 + nb + nt]))
    return layers


def output_blobs(layers) -> list[str]:
    """Blobs some layer makes and none consumes, in the order they are made."""
    used = {b for _, bottoms, _ in layers for b in bottoms}
    return [t for _, _, tops in layers for t in tops if t not in used]


def read_sidecar(param: Path) -> dict[str, Any]:
    path = Path(param).with_suffix(".json")
    try:
        side = read_json(path, error=BundleError)
    except FileNotFoundError:
        raise BundleError(f"{param}: its sidecar {path.name} is missing (written by fer-edge export beside the "
                          "param; ncnn files alone do not say which blob is which output)") from None
    if not isinstance(side, dict) or side.get("format") != "fer-edge-ncnn":
        raise BundleError(f"{path}: not a fer_edge ncnn sidecar (format {side.get('format') if isinstance(side, dict) else side!r})")
    for key in ("inputs", "outputs"):
        if not isinstance(side.get(key), dict) or not all(isinstance(v, dict) and isinstance(v.get("blob"), str)
                                                          for v in side[key].values()):
            raise BundleError(f"{path}: {key} must map each graph name to its ncnn blob")
    return side



@register_backend
class NcnnBackend(Backend):
    name = "ncnn"
    format = "ncnn"

    @classmethod
    def probe(cls) -> Probe:
        try:
            ncnn = importlib.import_module("ncnn")
            ncnn.Net().opt  # the native library really loads
            cores = ncnn.get_cpu_count()
        except Exception as e:  # ImportError, or a broken native library
            return Probe(False, f"cannot import ncnn: {e}")
        return Probe(True, f"ncnn {ncnn.__version__} on {cores} CPU cores", ncnn.__version__, ("cpu",))

    @classmethod
    def preference(cls) -> tuple[int, str]:
        return 5, "ncnn on the CPU (after onnxruntime and openvino in the fixed order; auto times it)"

    @staticmethod
    def open_net(param: Path, weights: Path, *, threads: int | None, fp16_storage: bool):
        import ncnn

        net = ncnn.Net()
        if threads:
            net.opt.num_threads = int(threads)
        if not fp16_storage:  # ncnn stores activations in FP16 where the CPU has F16C unless told not to
            net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise BundleError(f"ncnn cannot load {param} with {Path(weights).name}")
        return net

    @staticmethod
    def extract(net, batch: np.ndarray, input_blob: str, blobs) -> dict[str, np.ndarray]:
        import ncnn

        out: dict[str, list[np.ndarray]] = {b: [] for b in blobs}
        for image in batch:
            ex = net.create_extractor()
            ex.input(input_blob, ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)))
            for b in blobs:
                rc, mat = ex.extract(b)
                if rc != 0:
                    raise BundleError(f"ncnn could not compute blob {b!r} (code {rc})")
                out[b].append(np.array(mat, dtype=np.float32).reshape(-1))
        return {b: np.stack(v) for b, v in out.items()}

    def __init__(self, path: Path, *, input_name: str, output_names: tuple[str, ...], threads: int | None = None,
                 device: str | None = None) -> None:
        d = devices.parse_device(device)
        if d is not None and d.kind != "cpu":
            raise InputError(f"the ncnn backend runs on the CPU only (device 'cpu' or None), got {device!r}")
        probe = self.probe()
        if not probe.usable:
            raise RuntimeUnavailableError(f"{probe.reason}; install it with: pip install 'fer-edge[{self.extra}]'")
        path = Path(path)
        weights = path.with_suffix(".bin")
        side = read_sidecar(path)
        for f, key in ((path, "param_sha256"), (weights, "bin_sha256")):
            if not f.is_file():
                raise BundleError(f"{f} is missing")
            if _sha256(f) != side.get(key):
                raise BundleError(f"{f.name} is not the file its sidecar {path.with_suffix('.json').name} describes "
                                  f"({key} differs): altered, or from another export")
        layers = read_param(path)
        made = {t for _, _, tops in layers for t in tops}
        if input_name not in side["inputs"] or not set(output_names) <= set(side["outputs"]):
            raise BundleError(f"{path}: sidecar maps inputs {sorted(side['inputs'])} and outputs "
                              f"{sorted(side['outputs'])}; manifest expects input {input_name!r} and outputs "
                              f"{list(output_names)}")
        self.input_blob = side["inputs"][input_name]["blob"]
        self.blobs = {n: side["outputs"][n]["blob"] for n in output_names}
        missing = [b for b in (self.input_blob, *self.blobs.values()) if b not in made]
        if missing:
            raise BundleError(f"{path}: the param file has no blob {missing} that its sidecar names")
        self.fp16_storage = bool((side.get("options") or {}).get("fp16_storage", False))
        try:
            self.net = self.open_net(path, weights, threads=threads, fp16_storage=self.fp16_storage)
        except FerEdgeError:
            raise
        except Exception as e:
            raise BundleError(f"ncnn cannot load {path}: {type(e).__name__}: {e}") from e
        self.input_shape = tuple(side["inputs"][input_name].get("shape") or ())[1:]
        self.sizes = {n: (side["outputs"][n].get("shape") or [0, 0])[-1] for n in output_names}
        self.output_names, self.threads, self.version = tuple(output_names), threads, probe.version

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or (self.input_shape and tuple(batch.shape[1:]) != self.input_shape):
            raise InputError(f"ncnn backend takes an N x {' x '.join(map(str, self.input_shape))} batch, "
                             f"got {batch.shape}")
        if not len(batch):
            return {n: np.zeros((0, self.sizes[n]), np.float32) for n in self.blobs}
        got = self.extract(self.net, batch, self.input_blob, list(self.blobs.values()))
        return {n: got[b] for n, b in self.blobs.items()}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version, "device": "cpu",
                "threads": self.net.opt.num_threads if self.threads else f"default ({self.net.opt.num_threads})",
                "fp16_storage": self.fp16_storage}
