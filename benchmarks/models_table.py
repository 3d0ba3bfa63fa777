"""docs/models.md's tables: every packaged model's recorded figures and its speed measured here.

Accuracy, macro-F1, per-class recall and ECE are read from each bundle's manifest, where
`fer-edge evaluate --record` put them (export/package_models.sh runs those commands; the test
suite re-measures them within the manifest's stated tolerance). Speed is measured now, in this
process, with the profiler: one thread, batch 1, every shipped backend x precision, each TTA mode
on the artifact `auto` serves.

    python benchmarks/models_table.py [--runs 500] [--json benchmarks/models.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from fer_edge.tta import TTA_MODES

KEYS = {"none": "fer2013/test", "flip": "fer2013/test/tta=flip", "ten_crop": "fer2013/test/tta=ten_crop"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def profile_rows(name: str, runs: int, tta: str, backends: str = "all", precision: str = "all") -> list[dict]:
    from fer_edge.profile import ProfileConfig, profile

    cfg = ProfileConfig(backends=backends, precisions=precision, batches=(1,), threads=(1,), runs=runs,
                        warmup=30, detection=False, tta=tta)
    return [r for r in profile(name, cfg)["rows"] if r["stage"] == "recognize"]


def model_entry(name: str, runs: int) -> dict:
    import fer_edge
    from fer_edge.bundle import Bundle

    bundle = Bundle.open(name)
    m = bundle.manifest
    training = m.extra.get("training") or {}
    entry = {"name": name, "arch": m.model["arch"], "params": m.model["params"],
             "bytes_on_disk": sum(p.stat().st_size for p in Path(bundle.root).rglob("*") if p.is_file()),
             "gpu": training.get("hardware"), "gpu_minutes": training.get("minutes"),
             "train_command": (m.extra.get("commands") or {}).get("train"),
             "temperature": (m.temperature or {}).get("value"), "figures": {}, "speed": {}}
    for mode in TTA_MODES:
        rec = m.evaluation.get(KEYS[mode])
        if rec:
            entry["figures"][mode] = {k: {f: r[f] for f in ("accuracy", "macro_f1", "ece", "ece_uncalibrated",
                                                            "per_class_recall") if f in r}
                                      for k, r in rec["runs"].items()}
            entry["figures_machine"] = rec.get("machine", {}).get("cpu")
    for r in profile_rows(name, runs, "none"):
        entry["speed"][f"{r['backend']}/{r['precision']}"] = r["ms_per_crop"]["p50"]
    auto = fer_edge.Recognizer(name, threads=1)
    entry["auto"] = f"{auto.backend}/{auto.precision}"
    for mode in TTA_MODES[1:]:
        rows = profile_rows(name, max(runs // 5, 50), mode, auto.backend, auto.precision)
        entry["speed"][f"{entry['auto']} tta={mode}"] = rows[0]["ms_per_crop"]["p50"]
    return entry


def print_tables(entries: list[dict]) -> None:
    print("| model | arch | params | size on disk | GPU min | artifact | plain acc / F1 | flip acc / F1 | "
          "ten-crop acc / F1 | ECE plain (uncal -> cal) | ms/crop 1 thr b1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for e in entries:
        for key in e["figures"].get("none", {}):
            cells = []
            for mode in TTA_MODES:
                f = e["figures"].get(mode, {}).get(key)
                cells.append(f"{100 * f['accuracy']:.2f} / {100 * f['macro_f1']:.2f}" if f else "")
            f = e["figures"]["none"][key]
            ece = f"{f['ece_uncalibrated']:.4f} -> {f['ece']:.4f}" if "ece" in f else ""
            ms = e["speed"].get(key)
            print(f"| {e['name']} | {e['arch']} | {e['params']:,} | {e['bytes_on_disk'] / 1e6:.2f} MB | "
                  f"{e['gpu_minutes']} | {key} | {' | '.join(cells)} | {ece} | {'' if ms is None else f'{ms:.3f}'} |")
    print()
    print("| model | auto serves | ms/crop plain | flip | ten-crop |")
    print("|---|---|---|---|---|")
    for e in entries:
        a = e["auto"]
        print(f"| {e['name']} | {a} | {e['speed'][a]:.3f} | {e['speed'][a + ' tta=flip']:.3f} | "
              f"{e['speed'][a + ' tta=ten_crop']:.3f} |")
    print()
    print("| model | artifact | " + " | ".join(("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"))
          + " |")
    print("|---|---|" + "---|" * 7)
    for e in entries:
        for key, f in e["figures"].get("none", {}).items():
            rec = f.get("per_class_recall", {})
            print(f"| {e['name']} | {key} | " + " | ".join(f"{100 * v:.1f}" for v in rec.values()) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,base")
    ap.add_argument("--runs", type=int, default=500, help="timed calls per speed row")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    entries = [model_entry(n, args.runs) for n in args.models.split(",")]
    print(f"speed measured {datetime.now(timezone.utc).isoformat(timespec='seconds')} on {cpu_name()}; "
          f"figures recorded on {entries[0].get('figures_machine')}\n")
    print_tables(entries)
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                         "cpu": cpu_name(), "models": entries}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
