"""Where the time goes: per-stage latency of a bundle on this machine.

`profile()` times each stage separately, on the packaged sample faces:
  preprocess  crops -> NCHW float32 batch (fer_edge.preprocess, numpy)
  backbone    the backend's run on that batch
  head        embedding/logits -> probabilities (the Recognizer's head)
  frame       the frame path per usable detector on a 640x480 frame with three faces: detect,
              crop, classify (once per detector, at the first thread count asked for)
for every (backend, precision, head, batch, threads) asked for, and reports p50/p95/p99 ms per
call and per crop, crops per second, the resident memory the row's own Recognizer added
("+RSS MiB"; the process's RSS and its peak so far are in the JSON), the Python-side peak
allocation of a call (tracemalloc), and the backend, precision and head the Recognizer actually
bound (`describe()`). On a Jetson, `tegrastats` is read in the background and each row gets the
mean power of its window. Speed figures belong in benchmark runs, not in unit tests.
"""

from __future__ import annotations

import inspect
import os
import platform
import re
import resource
import shutil
import subprocess
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from .errors import InputError, RuntimeUnavailableError

STAGES = ("preprocess", "backbone", "head")
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class ProfileConfig:
    """backends: "auto", "all" (every usable backend the bundle has an artifact for) or names;
    precisions: "auto", "all" (every precision the bundle ships for that backend) or names;
    heads: "auto" (the manifest default), "all" (in_graph and every shipped head) or names."""

    backends: Sequence[str] | str = "auto"
    precisions: Sequence[str] | str = "all"
    heads: Sequence[str] | str = "auto"
    batches: Sequence[int] = (1, 8, 32)
    threads: Sequence[int] = (1, 2)
    runs: int = 50
    warmup: int = 5
    detection: bool = True
    power: bool = True  # read tegrastats when it is installed
    tta: str = "none"  # the Recognizer's test-time augmentation: its views are part of each stage

    def __post_init__(self) -> None:
        for name in ("batches", "threads"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and v >= 1 for v in values):
                raise InputError(f"{name} must be positive integers, got {values!r}")
        from .tta import check_mode

        check_mode(self.tta)
        if self.runs < 3 or self.warmup < 0:
            raise InputError(f"runs must be >= 3 and warmup >= 0, got {self.runs}, {self.warmup}")


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise InputError("no samples to summarise")
    return {f"p{q}": float(np.percentile(a, q)) for q in PERCENTILES} | {"mean": float(a.mean())}


def rss_mib() -> float | None:
    """The process's resident set now (Linux /proc; None where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


# ---------------------------------------------------------------- tegrastats (Jetson)

_RAIL_MW = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")  # JetPack 5+: VDD_IN 5000mW/4900mW
_RAIL_OLD = re.compile(r"\b((?:POM|VDD)_[A-Z0-9_]+) (\d+)/(\d+)\b")  # JetPack 4: POM_5V_IN 1750/1628
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's input rail where the board has one


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line -> {"rails": {name: mW now}, "total_mw", "ram_used_mb", "ram_total_mb",
    "gpu_load_pct"}. total_mw is the input rail (VDD_IN, POM_5V_IN) where the board reports one,
    else the sum of the rails (AGX Orin reports only VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, ...)."""
    rails = {m[0]: int(m[1]) for m in _RAIL_MW.findall(line)}
    if not rails:
        rails = {m[0]: int(m[1]) for m in _RAIL_OLD.findall(line)}
    total = next((rails[r] for r in TOTAL_RAILS if r in rails), sum(rails.values()) if rails else None)
    out: dict[str, Any] = {"rails": rails, "total_mw": total}
    if (m := _RAM.search(line)):
        out["ram_used_mb"], out["ram_total_mb"] = int(m[1]), int(m[2])
    if (m := _GR3D.search(line)):
        out["gpu_load_pct"] = int(m[1])
    return out


class Tegrastats:
    """`tegrastats --interval MS` in the background; `mean_power(t0, t1)` over a time window."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats") -> None:
        path = shutil.which(command)
        if path is None:
            raise RuntimeUnavailableError(f"{command} not found on PATH (it ships with JetPack on Jetson devices)")
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._proc = subprocess.Popen([path, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats(line)
            if sample["total_mw"] is not None:
                self.samples.append((time.perf_counter(), sample))

    def mean_power(self, t0: float, t1: float) -> dict[str, Any] | None:
        window = [s for t, s in list(self.samples) if t0 <= t <= t1]
        if not window:
            return None
        rails = sorted({r for s in window for r in s["rails"]})
        return {"total_mw": float(np.mean([s["total_mw"] for s in window])), "samples": len(window),
                "rails_mw": {r: float(np.mean([s["rails"].get(r, 0) for s in window])) for r in rails}}

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(timeout=2)


# ---------------------------------------------------------------- the profiler

def _sample_crops() -> list[np.ndarray]:
    from .data import read_image
    from .demo import sample_faces

    return [read_image(p) for p in sample_faces()]


def _detection_frame(crops: list[np.ndarray]) -> np.ndarray:
    from .preprocess import resize

    frame = np.empty((480, 640, 3), np.uint8)
    frame[:] = (120, 130, 140)
    for k, x in enumerate((40, 250, 460)):
        big = np.clip(np.rint(resize(crops[k * 5 % len(crops)], (140, 140), "bilinear")), 0, 255).astype(np.uint8)
        frame[170:310, x:x + 140] = big[:, :, None]
    return frame


def _expand(value, choices: list[str], what: str) -> list[str]:
    if value == "all":
        return list(choices)
    if value == "auto":
        return ["auto"]
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in choices and n != "auto"]
    if unknown:
        raise InputError(f"{what} {unknown} not available here; choose from {choices}, 'auto' or 'all'")
    return names


def _plan(bundle, cfg: ProfileConfig) -> list[tuple[str, str, str]]:
    from .formats import FORMATS
    from .runtimes import BACKENDS

    have: dict[str, list[str]] = {}
    for art in bundle.manifest.artifacts:
        backend = FORMATS[art.format].backend
        if backend in BACKENDS and BACKENDS[backend].probe().usable:
            have.setdefault(backend, []).append(art.precision)
    if not have:
        raise RuntimeUnavailableError(f"no usable backend can run bundle {bundle.name!r} here")
    heads = _expand(cfg.heads, ["in_graph", *bundle.manifest.heads], "heads")
    asked = [] if cfg.backends in ("auto", "all") else \
        [cfg.backends] if isinstance(cfg.backends, str) else list(cfg.backends)
    for name in asked:
        if name in BACKENDS and name not in have:
            probe = BACKENDS[name].probe()
            raise RuntimeUnavailableError(
                f"backend {name!r} cannot profile bundle {bundle.name!r} here: "
                + (probe.reason if not probe.usable else f"the bundle has no {BACKENDS[name].format} artifact"))
    plan = []
    for backend in _expand(cfg.backends, sorted(have), "backends"):
        precs = have.get(backend, ["auto"]) if backend != "auto" else ["auto"]
        for precision in _expand(cfg.precisions, precs, f"precisions of {backend}") if backend != "auto" else \
                _expand(cfg.precisions if cfg.precisions != "all" else "auto", ["auto"], "precisions"):
            plan += [(backend, precision, head) for head in heads]
    return plan


def _recognizer(bundle, backend: str, precision: str, head: str, threads: int, tta: str = "none"):
    from .recognizer import Recognizer

    kwargs: dict[str, Any] = {"precision": precision, "threads": threads}
    if tta != "none":
        kwargs["tta"] = tta
    if head != "auto":
        if "head" not in inspect.signature(Recognizer).parameters:
            raise InputError(f"head {head!r} asked for, but this Recognizer has no heads")
        kwargs["head"] = head
    return Recognizer(bundle=bundle, backend=backend, **kwargs)


def _stages(rec):
    """The Recognizer's public stages: crops -> batch (its test-time augmentation views, run as one
    batch) -> outputs -> probabilities (the views averaged), so each stage's row carries its share
    of the TTA cost."""
    return (lambda crops: rec.views(rec.preprocess(crops))), rec.backbone, rec.classify


def _time_row(rec, crops: list[np.ndarray], runs: int, warmup: int) -> dict[str, list[float]]:
    pre, run, head = _stages(rec)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in range(warmup + runs):
        t0 = time.perf_counter_ns()
        batch = pre(crops)
        t1 = time.perf_counter_ns()
        out = run(batch)
        t2 = time.perf_counter_ns()
        head(out)
        t3 = time.perf_counter_ns()
        if i >= warmup:
            for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2)):
                samples[s].append(dt / 1e6)
    samples["total"] = [a + b + c for a, b, c in zip(*(samples[s] for s in STAGES))]
    return samples


def _python_peak_kib(rec, crops: list[np.ndarray]) -> float:
    pre, run, head = _stages(rec)
    tracemalloc.start()
    try:
        for _ in range(3):
            head(run(pre(crops)))
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def profile(model=None, config: ProfileConfig | None = None, *, progress=None) -> dict[str, Any]:
    """Profile a bundle (None = the packaged default). `progress(row)` is called after each row."""
    from .bundle import Bundle

    cfg = config or ProfileConfig()
    bundle = Bundle.open(model)
    crops = _sample_crops()
    power = None
    if cfg.power and shutil.which("tegrastats"):
        power = Tegrastats()
    rows: list[dict[str, Any]] = []
    try:
        for backend, precision, head in _plan(bundle, cfg):
            for threads in cfg.threads:
                before = rss_mib()  # what this row's Recognizer (model, session, buffers) adds is measured from here
                rec = _recognizer(bundle, backend, precision, head, threads, cfg.tta)
                d = rec.describe()
                head_d = d.get("head") or {"name": "in_graph"}
                for batch in cfg.batches:
                    batch_crops = [crops[i % len(crops)] for i in range(batch)]
                    t_start = time.perf_counter()
                    samples = _time_row(rec, batch_crops, cfg.runs, cfg.warmup)
                    t_end = time.perf_counter()
                    total = percentiles(samples["total"])
                    row = {"stage": "recognize", "backend": d["backend"], "precision": d["precision"],
                           "head": head_d.get("name") or head_d.get("kind"), "device": d.get("device"),
                           "batch": batch, "threads": threads, "runs": cfg.runs, "tta": cfg.tta,
                           "ms_per_call": {s: percentiles(samples[s]) for s in (*STAGES, "total")},
                           "ms_per_crop": {k: v / batch for k, v in total.items()},
                           "crops_per_s": batch * 1000.0 / total["p50"],
                           "peak_rss_mib": peak_rss_mib(), "python_peak_kib": _python_peak_kib(rec, batch_crops),
                           **_rss_fields(before),
                           "requested": {"backend": backend, "precision": precision, "head": head}}
                    if power is not None:
                        row["power"] = power.mean_power(t_start, t_end)
                    rows.append(row)
                    if progress:
                        progress(row)
        if cfg.detection:
            for row in _profile_detection(crops, cfg, bundle):
                rows.append(row)
                if progress:
                    progress(row)
    finally:
        if power is not None:
            power.close()
    return {"model": bundle.manifest.name, "source": str(bundle.source),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "machine": platform.machine(),
                        "processor": platform.processor(), "cpu_count": os.cpu_count(),
                        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                        "tegrastats": power is not None},
            "config": asdict(cfg), "rows": rows}


def _profile_detection(crops: list[np.ndarray], cfg: ProfileConfig, bundle=None) -> list[dict[str, Any]]:
    """The frame path per usable detector: detect, crop (and align) each face, classify the crops
    in one batch; at the first thread count asked for, for the detector and the model alike."""
    from .detect import available_detectors, create_detector, crop_face, crop_side_for

    rows = []
    threads = cfg.threads[0]
    rec = _recognizer(bundle, "auto", "auto", "auto", threads, cfg.tta) if bundle is not None else None
    frame = _detection_frame(crops)
    cap = crop_side_for(rec)  # the crop size predict_frame cuts at
    for name, (ok, _) in available_detectors().items():
        if not ok:
            continue
        before = rss_mib()
        det = create_detector(name, threads=threads)
        times: dict[str, list[float]] = {"detect": [], "crop": [], "classify": [], "total": []}
        for i in range(cfg.warmup + cfg.runs):
            t0 = time.perf_counter_ns()
            faces = det.detect(frame)
            t1 = time.perf_counter_ns()
            face_crops = [crop_face(frame, f, margin=det.margin, max_side=cap) for f in faces]
            t2 = time.perf_counter_ns()
            if rec is not None and face_crops:
                rec.predict_batch(face_crops)
            t3 = time.perf_counter_ns()
            if i >= cfg.warmup:
                for k, (a, b) in {"detect": (t0, t1), "crop": (t1, t2), "classify": (t2, t3), "total": (t0, t3)}.items():
                    times[k].append((b - a) / 1e6)
        m = {k: percentiles(v) for k, v in times.items()}
        rows.append({"stage": "frame", "backend": det.name, "precision": None, "head": None, "device": "cpu",
                     "batch": 1, "threads": threads, "runs": cfg.runs, "frame": list(frame.shape),
                     "faces": len(faces), "ms_per_call": {"detection": m["detect"], **m},
                     "ms_per_crop": None, "crops_per_s": None, "frames_per_s": 1000.0 / m["total"]["p50"],
                     "peak_rss_mib": peak_rss_mib(), "python_peak_kib": None, "detector": det.describe(),
                     "model": None if rec is None else {"backend": rec.backend, "precision": rec.precision},
                     **_rss_fields(before)})
    return rows


def _rss_fields(before: float | None) -> dict[str, float | None]:
    """rss_mib: the process's resident set after the row; rss_added_mib: what the row's own
    Recognizer (or detector) and its runs added since just before it was made (peak_rss_mib is the
    process's peak so far, which only rises from row to row)."""
    now = rss_mib()
    return {"rss_mib": now, "rss_added_mib": None if now is None or before is None else max(0.0, now - before)}


# ---------------------------------------------------------------- output

def format_table(result: dict[str, Any]) -> str:
    head = (f"{'stage':9s} {'backend':11s} {'prec':5s} {'head':9s} {'batch':>5s} {'thr':>3s} "
            f"{'pre p50':>8s} {'bb p50':>8s} {'head p50':>8s} {'p50':>8s} {'p95':>8s} {'p99':>8s} "
            f"{'ms/crop':>8s} {'crops/s':>9s} {'+RSS MiB':>8s}")
    lines = [f"{result['model']}: milliseconds per call unless noted ({result['date']})", head, "-" * len(head)]
    for r in result["rows"]:
        m = r["ms_per_call"]
        stages = {s: f"{m[s]['p50']:8.3f}" if s in m else f"{'':8s}" for s in STAGES}
        per_crop = f"{r['ms_per_crop']['p50']:8.3f}" if r["ms_per_crop"] else f"{'':8s}"
        rate = r["crops_per_s"] if r["crops_per_s"] is not None else r.get("frames_per_s")
        unit = "" if r["crops_per_s"] is not None else " fps"
        line = (f"{r['stage']:9s} {r['backend']:11s} {r['precision'] or '-':5s} {r['head'] or '-':9s} "
                f"{r['batch']:5d} {str(r['threads']):>3s} {stages['preprocess']} {stages['backbone']} {stages['head']} "
                f"{m['total']['p50']:8.3f} {m['total']['p95']:8.3f} {m['total']['p99']:8.3f} {per_crop} "
                f"{rate:9.1f}{unit} {_mib(r.get('rss_added_mib'))}")
        if r["stage"] == "frame":
            line += "  detect {:.2f} + crop {:.2f} + classify {:.2f} ms".format(
                *(m[k]["p50"] for k in ("detect", "crop", "classify")))
        if r.get("power"):
            line += f"  {r['power']['total_mw'] / 1000:.2f} W"
        lines.append(line)
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'?':>8s}"


def plot(result: dict[str, Any], path: str | os.PathLike) -> str:
    """A bar chart of ms per crop (p50) per row: matplotlib when installed, else a plain SVG."""
    rows = [r for r in result["rows"] if r["ms_per_crop"]]
    labels = [f"{r['backend']} {r['precision']} {r['head']} b{r['batch']} t{r['threads']}" for r in rows]
    values = [r["ms_per_crop"]["p50"] for r in rows]
    path = os.fspath(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not path.lower().endswith(".svg"):
            raise RuntimeUnavailableError(f"plotting to {path} needs matplotlib (pip install matplotlib); "
                                          "or name an .svg file, which is written without it") from None
        return _svg_bars(labels, values, path, f"{result['model']}: ms per crop (p50)")
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    ax.barh(labels, values)
    ax.invert_yaxis()
    ax.set_xlabel("ms per crop (p50)")
    ax.set_title(result["model"])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _svg_bars(labels: list[str], values: list[float], path: str, title: str) -> str:
    from xml.sax.saxutils import escape

    width, left, bar_h = 720, 300, 18
    top = 30
    scale = (width - left - 80) / max(max(values, default=1.0), 1e-9)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + bar_h * len(values) + 20}" '
             'font-family="sans-serif" font-size="12">', f'<text x="10" y="18">{escape(title)}</text>']
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * bar_h
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{v * scale:.1f}" height="{bar_h - 4}" fill="#4477aa"/>')
        parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 13}">{v:.3f}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


# ---------------------------------------------------------------- models side by side (`profile --models`)

def recorded_accuracy(manifest, backend: str, precision: str) -> dict[str, Any] | None:
    """The figures recorded in the manifest for the served artifact: FER2013 test (plain, no TTA)
    where `evaluate --record` stored them, else the export's val figures."""
    from .formats import FORMATS

    run = (((manifest.evaluation.get("fer2013/test") or {}).get("runs") or {}).get(f"{backend}/{precision}"))
    if run:
        return {"split": "fer2013 test", "accuracy": run["accuracy"], "macro_f1": run.get("macro_f1")}
    fmt = next((f for f, spec in FORMATS.items() if spec.backend == backend), backend)
    val = (manifest.evaluation.get("val") or {}).get(f"{fmt}/{precision}")
    if val:
        return {"split": "val", "accuracy": val["accuracy"], "macro_f1": val.get("macro_f1")}
    return None


def compare_models(models: Sequence[str], *, backend: str = "auto", precision: str = "auto",
                   threads: Sequence[int] = (1,), runs: int = 50, warmup: int = 5, progress=None) -> dict[str, Any]:
    """ms per crop (one `predict` of one sample crop, end to end) of each model on this machine,
    beside each served artifact's recorded accuracy: choose by your own latency budget."""
    from .recognizer import Recognizer
    from .runtimes.machine import cpu_class, cpu_model

    if not models:
        raise InputError("name at least one model")
    if runs < 3 or warmup < 0:
        raise InputError(f"runs must be >= 3 and warmup >= 0, got {runs}, {warmup}")
    crops = _sample_crops()
    rows = []
    for model in models:
        for n in threads:
            rec = Recognizer(model, backend=backend, precision=precision, threads=n)
            d = rec.describe()
            times = []
            for i in range(warmup + runs):
                t0 = time.perf_counter_ns()
                rec.predict(crops[i % len(crops)])
                if i >= warmup:
                    times.append((time.perf_counter_ns() - t0) / 1e6)
            rows.append({"model": model, "backend": d["backend"], "precision": d["precision"], "threads": n,
                         "params": rec.manifest.model.get("params"), "ms_per_crop": percentiles(times),
                         "recorded": recorded_accuracy(rec.manifest, d["backend"], d["precision"]),
                         "requested": {"backend": backend, "precision": precision}})
            if progress:
                progress(rows[-1])
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "cpu_class": cpu_class(), "cpu_count": os.cpu_count(),
                        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "runs": runs, "batch": 1, "rows": rows}


def format_models_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    head = (f"{'model':8s} {'backend':11s} {'prec':5s} {'thr':>3s} {'params':>9s} {'ms/crop p50':>11s} {'p95':>7s} "
            f"{'accuracy':>8s} {'macro-F1':>8s}  recorded on")
    lines = [f"{m['cpu']} ({m['cpu_class']}): one crop per call, {result['runs']} calls ({result['date']})", head,
             "-" * len(head)]
    for r in result["rows"]:
        rec = r["recorded"] or {}
        acc = f"{rec['accuracy'] * 100:7.2f}%" if rec.get("accuracy") is not None else f"{'?':>8s}"
        f1 = f"{rec['macro_f1'] * 100:7.2f}%" if rec.get("macro_f1") is not None else f"{'?':>8s}"
        lines.append(f"{r['model']:8s} {r['backend']:11s} {r['precision']:5s} {r['threads']:3d} "
                     f"{r['params'] or 0:9,d} {r['ms_per_crop']['p50']:11.3f} {r['ms_per_crop']['p95']:7.3f} "
                     f"{acc} {f1}  {rec.get('split', '-')}")
    return "\n".join(lines)
