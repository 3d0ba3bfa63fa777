"""Which backend runs a bundle: an explicit name, `auto` (ranked) or `fastest` (timed, cached).

- explicit: that backend or an error; never another one.
- auto: measured. Every usable (backend, precision) pair the bundle ships and the accuracy gate
  passed, FP32 included, is timed briefly (AUTO_RUNS calls, batch 1, the bundle's golden crop).
  The fastest wins, unless another pair is within the timing noise of it (`within_noise`) and
  more accurate on val (the manifest's `evaluation.val`): then that one is served, since the
  speed difference is not real and the accuracy difference is. The choice is cached per bundle
  and machine (`selection_cache`). Only where timing is disabled
  (FER_EDGE_AUTO=order) or impossible (a usable backend would first have to build a device engine)
  does auto take the fixed order of `Backend.preference()`: the first usable backend that loads.
  Every backend passed over is recorded with the reason. `strict=True`: a usable backend that
  then fails to load is an error, not a reason to try the next.
- fastest: the same code timing every pair with more runs (TIMING_RUNS) and keeping the strictly
  fastest; `refresh=True` re-times (both strategies).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import BundleError, FerEdgeError, InputError, RuntimeUnavailableError, install_hint
from ..formats import FORMATS
from . import selection_cache
from .base import BACKENDS, Backend, Probe, get_backend

log = logging.getLogger("fer_edge")

TIMING_WARMUP = 3
TIMING_RUNS = 30
# auto times the same pairs more briefly: deciding must stay well under a second on a 2-core box
AUTO_WARMUP = 2
AUTO_RUNS = 10
AUTO_PAIR_BUDGET_S = 0.2  # and at most this long per pair (at least 3 runs): a big model cannot stall startup
AUTO_ENV = "FER_EDGE_AUTO"
# Within noise: two medians differ by no more than the larger interquartile range of the two pairs'
# runs, bounded below by NOISE_FLOOR (pairs are timed one after another, so a shared machine's load
# drifts between them more than within one pair's runs) and above by NOISE_CAP (never serve a pair
# more than 10 % slower than the fastest for accuracy).
NOISE_FLOOR = 0.03
NOISE_CAP = 0.10
# Part of auto's cache key: choices made under an older rule (one precision per backend) are re-decided.
AUTO_RULE = "every-pair/noise-then-val-accuracy/1"


@dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float = 0.0  # interquartile range of the timed calls


@dataclass
class Selection:
    backend: Backend
    name: str
    precision: str
    path: Path
    reason: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)  # measured only: "backend/precision" -> median ms
    cache: str | None = None  # measured only: "hit", "miss" or "refresh"
    decision: dict[str, Any] = field(default_factory=dict)  # auto/fastest: how it decided and what that cost

    def describe(self) -> dict[str, Any]:
        d = {"backend": self.name, "precision": self.precision, "artifact": str(self.path), "reason": self.reason,
             "skipped": self.skipped}
        if self.timings_ms:
            d.update(timings_ms=self.timings_ms, cache=self.cache)
        if self.decision:
            d["decision"] = self.decision
        return d


def probe_all() -> dict[str, Probe]:
    return {name: cls.probe() for name, cls in BACKENDS.items()}


def auto_order() -> tuple[list[str], str]:
    """Backend names in this machine's preference order, and why (each backend's own reason)."""
    prefs = {name: cls.preference() for name, cls in BACKENDS.items()}
    order = sorted(BACKENDS, key=lambda n: prefs[n][0])  # stable: registration order breaks ties
    return order, "; ".join(f"{n}: {prefs[n][1]}" for n in order)


def gate_failures(bundle) -> set[str]:
    """'format/precision' keys shipped past a failed accuracy gate (export with allow_drop)."""
    gate = bundle.manifest.evaluation.get("accuracy_gate") or {}
    limit = gate.get("max_drop_pp", 0.5)
    # Newer exporters list every artifact that failed either bound (accuracy or macro-F1);
    # older bundles only recorded accuracy drops.
    failed = set(gate.get("failed_artifacts") or ()) | failed_on_cpu_class(bundle)
    return failed | {k for k, drop in (gate.get("drops_pp") or {}).items() if drop > limit}


def failed_on_cpu_class(bundle, cls: str | None = None) -> set[str]:
    """'format/precision' keys whose figures re-measured on this CPU class (default: this machine's;
    `evaluation.accuracy_gate.cpu_classes`, written by tools/arm64) fell beyond the gate: not for auto here."""
    from ..parity import isa_family

    gate = bundle.manifest.evaluation.get("accuracy_gate") or {}
    return set((((gate.get("cpu_classes") or {}).get(cls or isa_family())) or {}).get("failed_artifacts") or ())


def candidate_precisions(bundle, cls: type[Backend], precision: str) -> list[str]:
    """Precisions auto/fastest may use: as asked, or every one the bundle holds minus gate failures
    (a device-built engine inherits its ONNX source's verdict)."""
    have = list(cls.precisions(bundle))
    if precision != "auto":
        return [precision] if precision in have else []
    failed = gate_failures(bundle)
    fmt = FORMATS[cls.format]
    ok = [p for p in have if f"{cls.format}/{p}" not in failed and not (fmt.built_on_device and f"onnx/{p}" in failed)]
    # FP16 on a CPU backend is compressed weights computed in FP32: no faster, a little less exact.
    return [p for p in ok if fmt.needs_gpu or p != "fp16"] or ok


def pick_precision(bundle, cls: type[Backend], precision: str) -> str:
    have = list(cls.precisions(bundle))
    if not have:
        raise BundleError(f"bundle {bundle.name!r} has no {cls.format} artifact")
    if precision != "auto":
        if precision not in have:
            raise BundleError(f"bundle {bundle.name!r} has no {cls.format} {precision} artifact; it has {have}")
        return precision
    ok = candidate_precisions(bundle, cls, "auto")
    return next((p for p in ("int8", "fp16", "fp32") if p in ok), (ok or have)[0])


def load(bundle, name: str, precision: str, *, threads: int | None, device: str | None) -> Selection:
    cls = get_backend(name)
    prec = pick_precision(bundle, cls, precision)
    path = cls.artifact_path(bundle, prec, device)
    outputs = tuple(bundle.manifest.model["outputs"].values())
    backend = cls(path, input_name=bundle.manifest.input.input_name, output_names=outputs, threads=threads,
                  device=device)
    return Selection(backend, name, prec, path)


def _failure(e: Exception) -> str:
    return str(e) if isinstance(e, FerEdgeError) else f"{type(e).__name__}: {e}"


def _candidates(bundle, precision: str, skipped: dict[str, str]) -> Iterator[str]:
    """Usable backends that hold an artifact for this request, in preference order."""
    for name in auto_order()[0]:
        cls = BACKENDS[name]
        if not candidate_precisions(bundle, cls, precision):
            what = "" if precision == "auto" else f" {precision}"
            skipped[name] = f"bundle has no usable {cls.format}{what} artifact"
            continue
        probe = cls.probe()
        if not probe.usable:
            skipped[name] = probe.reason
            continue
        yield name


def _none_usable(bundle, skipped: dict[str, str]) -> RuntimeUnavailableError:
    formats = {a.format for a in bundle.manifest.artifacts}
    extras = sorted({c.extra for c in BACKENDS.values() if c.format in formats})
    details = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    return RuntimeUnavailableError(f"no backend can run bundle {bundle.name!r} here ({details}). Install one of: "
                                   + ", ".join(install_hint(e) for e in extras))


def select_explicit(bundle, backend: str, *, precision: str, threads, device, strict: bool,
                    refresh: bool) -> Selection:
    cls = get_backend(backend)
    probe = cls.probe()
    if not probe.usable:
        raise RuntimeUnavailableError(f"backend {backend!r} is not usable here: {probe.reason}. "
                                      f"Install it with: {install_hint(cls.extra)}")
    try:
        sel = load(bundle, backend, precision, threads=threads, device=device)
    except FerEdgeError:
        raise
    except Exception as e:  # a third-party backend's own exception: still ours to report, never a fallback
        raise RuntimeUnavailableError(f"backend {backend!r} failed to load: {_failure(e)}") from e
    sel.reason = f"requested explicitly ({probe.reason})"
    return sel


def _select_ordered(bundle, *, precision: str, threads, device, strict: bool) -> Selection:
    """The first usable backend in the fixed preference order that loads."""
    skipped: dict[str, str] = {}
    order, why = auto_order()
    for name in _candidates(bundle, precision, skipped):
        try:
            sel = load(bundle, name, precision, threads=threads, device=device)
        except Exception as e:  # imports but cannot run this artifact here
            if strict:
                raise RuntimeUnavailableError(f"strict: {name}, the first usable backend in {order}, failed to load "
                                              f"(not falling back): {_failure(e)}") from e
            skipped[name] = f"failed to load: {_failure(e)}"
            continue
        sel.reason = f"auto: first usable of {order} ({why})"
        sel.skipped = skipped
        return sel
    raise _none_usable(bundle, skipped)


def auto_mode() -> str:
    """How `auto` decides: 'measure' (default) or 'order' (FER_EDGE_AUTO=order: no timing at all)."""
    mode = os.environ.get(AUTO_ENV, "measure").strip().lower() or "measure"
    if mode not in ("measure", "order"):
        raise InputError(f"{AUTO_ENV} must be 'measure' or 'order', got {mode!r}")
    return mode


def _untimeable(bundle, precision: str) -> str | None:
    """Why timing is impossible here (None when it is possible)."""
    skipped: dict[str, str] = {}
    built = [n for n in _candidates(bundle, precision, skipped) if FORMATS[BACKENDS[n].format].built_on_device]
    if built:  # timing would mean building an engine for this GPU first: minutes, not milliseconds
        return f"timing {', '.join(built)} would first build an engine on this device"
    return None


def select_auto(bundle, *, precision: str, threads, device, strict: bool, refresh: bool) -> Selection:
    """Measured: every usable pair on a short timing, served by `choose` (cached like `fastest`); the fixed order
    only where timing is disabled (FER_EDGE_AUTO=order) or impossible (see `_untimeable`)."""
    t0 = time.perf_counter()
    why_not = "disabled by FER_EDGE_AUTO=order" if auto_mode() == "order" else _untimeable(bundle, precision)
    if why_not is None:
        sel = _select_measured(bundle, "auto", precision=precision, threads=threads, device=device, strict=strict,
                               refresh=refresh, warmup=AUTO_WARMUP, runs=AUTO_RUNS, prefer_accurate=True,
                               budget_s=AUTO_PAIR_BUDGET_S)
    else:
        sel = _select_ordered(bundle, precision=precision, threads=threads, device=device, strict=strict)
        sel.reason += f"; not timed: {why_not}"
        sel.decision = {"method": "fixed order", "why": why_not}
    sel.decision["seconds"] = round(time.perf_counter() - t0, 4)
    return sel


def time_backend(backend: Backend, x: np.ndarray, *, warmup: int = TIMING_WARMUP, runs: int = TIMING_RUNS,
                 budget_s: float | None = None) -> Timing:
    """Median and interquartile range (ms) of `runs` calls after `warmup` calls; with `budget_s`,
    stop once that much time has gone by and at least 3 calls were timed."""
    start = time.perf_counter()
    for _ in range(warmup):
        backend.run(x)
        if budget_s is not None and time.perf_counter() - start > budget_s / 2:
            break  # one warm-up is enough for a slow model
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(x)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    q1, med, q3 = np.percentile(np.asarray(times) * 1000, [25, 50, 75])
    return Timing(float(med), float(q3 - q1))


def time_selection(sel: Selection, x: np.ndarray, *, warmup: int, runs: int, budget_s: float | None = None) -> Timing:
    """Median and spread of one loaded (backend, precision) pair: the one place auto/fastest measure
    (tests pin it to make an order explicit instead of depending on this machine's speed)."""
    return time_backend(sel.backend, x, warmup=warmup, runs=runs, budget_s=budget_s)


def timing_input(bundle) -> tuple[np.ndarray, str]:
    """One batch-1 input to time on: the bundle's first golden crop (real face statistics), else noise."""
    rel = (bundle.manifest.golden.get("files") or {}).get("input")
    if rel:
        try:
            x = np.load(bundle.file(rel))[:1].astype(np.float32)
            if x.shape[1:] == (bundle.manifest.input.channels, *bundle.manifest.input.size):
                return x, "golden crop"
        except Exception:  # an unreadable golden file is verify's finding; noise times the same
            pass
    return np.random.default_rng(0).random((1, bundle.manifest.input.channels, *bundle.manifest.input.size),
                                           dtype=np.float32), "noise"


def noise_ms(a: Timing, b: Timing) -> float:
    """How far apart two pairs' medians may be and still be the same speed (NOISE_FLOOR, NOISE_CAP)."""
    fast = min(a.median_ms, b.median_ms)
    return min(max(a.spread_ms, b.spread_ms, NOISE_FLOOR * fast), NOISE_CAP * fast)


def within_noise(t: Timing, fastest: Timing) -> bool:
    return t.median_ms - fastest.median_ms <= noise_ms(t, fastest)


def val_accuracy(bundle, name: str, precision: str) -> float | None:
    """The artifact's accuracy on val from the manifest (a device-built engine: its ONNX source's);
    val, never test: selection must not be tuned on the test split."""
    val = bundle.manifest.evaluation.get("val") or {}
    fmt = BACKENDS[name].format
    for key in (f"{fmt}/{precision}", *((f"onnx/{precision}",) if FORMATS[fmt].built_on_device else ())):
        acc = (val.get(key) or {}).get("accuracy")
        if isinstance(acc, (int, float)):
            return float(acc)
    return None


def choose(timings: dict[str, Timing], accuracy: dict[str, float | None], *,
           prefer_accurate: bool) -> tuple[str, str]:
    """The pair to serve and why: the fastest, or (prefer_accurate) the most accurate pair on val of
    those within the noise of it. A pair without a val figure never displaces one."""
    fastest = min(timings, key=lambda p: timings[p].median_ms)
    why = f"the fastest of {len(timings)} pairs"
    base = accuracy.get(fastest)
    if not prefer_accurate or base is None:
        return fastest, why
    better = [p for p in timings if within_noise(timings[p], timings[fastest])
              and (accuracy.get(p) or -1.0) > base]
    if not better:
        return fastest, why
    pick = max(better, key=lambda p: (accuracy[p], -timings[p].median_ms))
    return pick, (f"within the timing noise ({noise_ms(timings[pick], timings[fastest]):.3f} ms) of the fastest, "
                  f"{fastest} at {timings[fastest].median_ms:.3f} ms, and more accurate on val "
                  f"({accuracy[pick] * 100:.2f} vs {base * 100:.2f} %)")


def _select_measured(bundle, strategy: str, *, precision: str, threads, device, strict: bool, refresh: bool,
                     warmup: int, runs: int, prefer_accurate: bool, budget_s: float | None = None) -> Selection:
    """Time every usable (backend, precision) pair at batch 1 and serve what `choose` says; the
    result is cached per bundle manifest sha256 + machine fingerprint (+ strategy and rule for auto)."""
    probes = probe_all()
    digest = selection_cache.manifest_sha256(bundle)
    machine = selection_cache.fingerprint(probes, threads=threads, device=device, precision=precision)
    if strategy != "fastest":  # fastest's keys stay as they were
        machine.update(strategy=strategy, rule=AUTO_RULE)
    key = selection_cache.cache_key(digest, machine)
    entry = None if refresh else selection_cache.lookup(key)
    if entry is not None:
        try:
            sel = load(bundle, entry["backend"], entry["precision"], threads=threads, device=device)
        except Exception as e:  # the cached winner no longer loads: re-time rather than trust it
            log.warning("fer_edge: cached %s choice %s/%s no longer loads (%s); re-timing", strategy,
                        entry["backend"], entry["precision"], _failure(e))
        else:
            sel.timings_ms, sel.skipped, sel.cache = entry.get("timings_ms", {}), entry.get("skipped", {}), "hit"
            pair = f"{sel.name}/{sel.precision}"
            sel.reason = (f"{strategy}: {pair} at {sel.timings_ms.get(pair, 0):.3f} ms per batch-1 call, "
                          f"{entry.get('why', 'the fastest')}, timed {entry.get('created', '?')} by "
                          f"{entry.get('strategy', 'fastest')} (cached in {selection_cache.cache_path()})")
            sel.decision = {"method": "measured", "cache": "hit", "timed": sorted(sel.timings_ms),
                            "input": entry.get("input", "noise"), "runs": entry.get("runs", TIMING_RUNS),
                            "why": "this bundle was already timed on this machine"}
            sel.decision.update({k: entry[k] for k in ("spread_ms", "val_accuracy", "rule") if k in entry})
            return sel
    skipped: dict[str, str] = {}
    timings: dict[str, Timing] = {}
    accuracy: dict[str, float | None] = {}
    loaded: dict[str, Selection] = {}
    x, source = timing_input(bundle)
    for name in _candidates(bundle, precision, skipped):
        for prec in candidate_precisions(bundle, BACKENDS[name], precision):
            pair = f"{name}/{prec}"
            try:
                sel = load(bundle, name, prec, threads=threads, device=device)
                timings[pair] = time_selection(sel, x, warmup=warmup, runs=runs, budget_s=budget_s)
            except Exception as e:
                if strict:
                    raise RuntimeUnavailableError(f"strict: {pair} is usable here but failed (not falling back): "
                                                  f"{_failure(e)}") from e
                skipped[pair] = f"failed: {_failure(e)}"
                continue
            accuracy[pair], loaded[pair] = val_accuracy(bundle, name, prec), sel
            # keep loaded only what can still be served: the fastest so far, and (auto) pairs within the cap
            fast = min(t.median_ms for t in timings.values())
            limit = fast * (1 + NOISE_CAP) if prefer_accurate else fast
            loaded = {p: s for p, s in loaded.items() if timings[p].median_ms <= limit}
    if not timings:
        raise _none_usable(bundle, skipped)
    winner, why = choose(timings, accuracy, prefer_accurate=prefer_accurate)
    best = loaded[winner]
    medians = {k: round(v.median_ms, 4) for k, v in timings.items()}
    spreads = {k: round(v.spread_ms, 4) for k, v in timings.items()}
    best.timings_ms, best.skipped, best.cache = medians, skipped, "refresh" if refresh else "miss"
    best.reason = (f"{strategy}: {winner} at {medians[winner]:.3f} ms per batch-1 call, {why}, median of {runs} on "
                   f"a {source} (timed now, threads={threads or 'default'})")
    best.decision = {"method": "measured", "cache": best.cache, "timed": sorted(medians), "input": source,
                     "runs": runs, "budget_s_per_pair": budget_s, "spread_ms": spreads, "why": "re-timed on request "
                     "(refresh=True)" if refresh else "first use of this bundle on this machine"}
    if prefer_accurate:
        best.decision.update(val_accuracy=accuracy, rule=AUTO_RULE)
    selection_cache.store_quietly(key, {"backend": best.name, "precision": best.precision, "timings_ms": medians,
                                "skipped": skipped, "manifest_sha256": digest, "bundle": bundle.name, "machine": machine,
                                "strategy": strategy, "runs": runs, "input": source, "why": why, **{
                                    k: best.decision[k] for k in ("spread_ms", "val_accuracy", "rule")
                                    if k in best.decision},
                                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return best


def select_fastest(bundle, *, precision: str, threads, device, strict: bool, refresh: bool) -> Selection:
    t0 = time.perf_counter()
    sel = _select_measured(bundle, "fastest", precision=precision, threads=threads, device=device, strict=strict,
                           refresh=refresh, warmup=TIMING_WARMUP, runs=TIMING_RUNS, prefer_accurate=False)
    sel.decision["seconds"] = round(time.perf_counter() - t0, 4)
    return sel


STRATEGIES: dict[str, Callable[..., Selection]] = {"auto": select_auto, "fastest": select_fastest}


def select_backend(bundle, backend: str = "auto", *, precision: str = "auto", threads: int | None = None,
                   device: str | None = None, strict: bool = False, refresh: bool = False) -> Selection:
    """Choose and load the backend for `bundle`; the Selection says what was chosen and why."""
    strategy = STRATEGIES.get(backend)
    if strategy is None:
        sel = select_explicit(bundle, backend, precision=precision, threads=threads, device=device, strict=strict,
                              refresh=refresh)
    else:
        sel = strategy(bundle, precision=precision, threads=threads, device=device, strict=strict, refresh=refresh)
    log.info("fer_edge: bundle %s runs on %s/%s: %s%s", bundle.name, sel.name, sel.precision, sel.reason,
             f"; skipped: {sel.skipped}" if sel.skipped else "")
    return sel
