"""Set an arm64 run of tools/arm64/measure.py against x86 and print the verdict of tools/arm64/check.sh.

For every packaged model: `fer-edge verify`'s result on arm64; for every artifact arm64 ran, its
accuracy and macro-F1 against the x86 figure (the manifest's recorded figures for the whole split,
this host's run on the same images for a slice) within the bundle's cross-CPU tolerance
(fer_edge.evaluate.CROSS_CPU_TOLERANCE, plus two images of slack), its per-image agreement with x86,
and how far its golden outputs are from x86's. On the whole split an artifact also meets the accuracy
gate (at most max_drop_pp below x86) or is marked in the bundle (accuracy_gate.cpu_classes), so that
`auto` avoids it there. Writes OUT/compare.json; exit 1 when something fails unmarked.

    python tools/arm64/compare.py --out .cache/arm64/out
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fer_edge.bundle import Bundle
from fer_edge.evaluate import CROSS_CPU_TOLERANCE
from fer_edge.runtimes.selection import failed_on_cpu_class

BACKEND_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


def golden_vs_x86(arrays: dict, ref: dict, model: str, art: str) -> dict | None:
    """max |diff| and top-1 agreement of two CPU classes' outputs on the same golden inputs."""
    keys = [f"{model}|{art}|{role}" for role in ("logits", "embedding")]
    if not all(k in arrays and k in ref for k in keys):
        return None
    diff = max(float(np.max(np.abs(arrays[k] - ref[k]))) for k in keys)
    top1 = float(np.mean(arrays[keys[0]].argmax(1) == ref[keys[0]].argmax(1)))
    return {"max_abs_diff": diff, "top1_agreement": top1}


def compare_model(name: str, arm: dict, x86: dict | None, arrays, ref_arrays, cls: str) -> dict:
    bundle = Bundle.open(name)
    ev = bundle.manifest.evaluation
    whole = arm["limit_per_class"] is None
    recorded = (ev.get(f"{Path(arm['data']).name}/{arm['split']}") or {}).get("runs", {}) if whole else {}
    gate = ev.get("accuracy_gate") or {}
    marked = failed_on_cpu_class(bundle, cls)
    rows = {}
    for key, run in arm["runs"].items():
        backend, precision = key.split("/")
        art = f"{BACKEND_FORMAT.get(backend, backend)}/{precision}"
        here = (x86 or {}).get("runs", {}).get(key)
        want = recorded.get(key) if whole else here
        row = {"artifact": art, "n": run["n"], "accuracy": run["accuracy"], "macro_f1": run["macro_f1"],
               "x86_reference": "manifest (recorded)" if whole else "this host, same images"}
        problems = []
        if want is None or want.get("n") != run["n"]:
            problems.append("no x86 figure on the same images")
        else:
            tol = CROSS_CPU_TOLERANCE.get(precision, CROSS_CPU_TOLERANCE["int8"])
            slack = tol["plus_images"] / max(run["n"], 1)
            for metric in ("accuracy", "macro_f1"):
                delta = run[metric] - want[metric]
                row[f"x86_{metric}"], row[f"{metric}_delta"] = want[metric], delta
                if abs(delta) > tol[metric] + slack:
                    problems.append(f"{metric} {delta * 100:+.2f} pp vs x86, beyond +-{(tol[metric] + slack) * 100:.2f}")
            if whole:
                drop = (want["accuracy"] - run["accuracy"]) * 100
                f1_drop = (want["macro_f1"] - run["macro_f1"]) * 100
                if drop > gate.get("max_drop_pp", 0.5) or f1_drop > gate.get("max_f1_drop_pp", 1.0):
                    problems.append(f"accuracy {-drop:+.2f} pp / macro-F1 {-f1_drop:+.2f} pp vs x86: beyond the gate "
                                    f"({gate.get('max_drop_pp', 0.5)} / {gate.get('max_f1_drop_pp', 1.0)} pp)")
        if here is not None and key in (x86 or {}).get("predictions", {}):
            a, b = np.asarray(arm["predictions"][key]), np.asarray(x86["predictions"][key])
            row["agreement_with_x86"] = float(np.mean(a == b)) if len(a) == len(b) else None
        row["golden_vs_x86"] = golden_vs_x86(arrays, ref_arrays, name, art)
        row["golden_vs_torch"] = arm["golden"].get(art)
        row["problems"] = problems
        row["status"] = "ok" if not problems else ("marked (auto avoids it here)" if art in marked else "FAILED")
        rows[key] = row
    return {"runs": rows, "skipped": arm.get("skipped", {}), "agreement": arm.get("agreement", {})}


def verify_summary(path: Path) -> dict:
    if not path.is_file() or not path.read_text().strip():
        return {"ok": False, "detail": f"{path.name}: verify wrote nothing (see {path.with_suffix('.log').name})"}
    report = json.loads(path.read_text())
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("passed", "failed", "skipped")}
    bad = [f"{c['name']}: {c['detail']}" for c in report["checks"] if c["status"] != "passed"]
    return {"ok": report["ok"], **counts, "not_passed": bad}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="check.sh's output folder (arm64.json, x86_64.json, verify-*.json)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    summary: dict = {"verify": {}, "models": {}}
    for path in sorted(out.glob("verify-*.json")):
        summary["verify"][path.stem.removeprefix("verify-")] = verify_summary(path)
    arm_path, x86_path = out / "arm64.json", out / "x86_64.json"
    if arm_path.is_file():
        arm = json.loads(arm_path.read_text())
        x86 = json.loads(x86_path.read_text()) if x86_path.is_file() else {"models": {}}
        arrays = dict(np.load(arm_path.with_suffix(".npz")))
        ref = dict(np.load(x86_path.with_suffix(".npz"))) if x86_path.is_file() else {}
        summary.update(cpu_class=arm["cpu_class"], command=arm["command"], date=arm["date"])
        for name, m in arm["models"].items():
            summary["models"][name] = compare_model(name, m, x86["models"].get(name), arrays, ref, arm["cpu_class"])

    print(f"{'model':6s} {'verify':8s} {'artifact':18s} {'n':>5s} {'arm64 acc':>9s} {'x86 acc':>8s} {'delta pp':>8s} "
          f"{'agree x86':>9s} {'golden |diff| / top-1 vs x86':>28s}  status")
    failed = [n for n, v in summary["verify"].items() if not v["ok"]]
    for name, v in summary["verify"].items():
        runs = summary["models"].get(name, {}).get("runs", {})
        vtxt = "passed" if v["ok"] else "FAILED"
        if not runs:
            print(f"{name:6s} {vtxt:8s} (no accuracy run)")
        for key, r in runs.items():
            g = r["golden_vs_x86"]
            gtxt = f"{g['max_abs_diff']:.2g} / {g['top1_agreement']:.3f}" if g else "n/a"
            x = r.get("x86_accuracy")
            print(f"{name:6s} {vtxt:8s} {key:18s} {r['n']:5d} {r['accuracy'] * 100:8.2f}% "
                  f"{(x * 100 if x is not None else float('nan')):7.2f}% {r.get('accuracy_delta', float('nan')) * 100:+8.2f} "
                  f"{(r.get('agreement_with_x86') or float('nan')) * 100:8.2f}% {gtxt:>28s}  {r['status']}")
            failed += [f"{name} {key}: {p}" for p in r["problems"] if r["status"] == "FAILED"]
        for art, why in summary["models"].get(name, {}).get("skipped", {}).items():
            print(f"{name:6s} {vtxt:8s} {art:18s} skipped: {why}")
        for line in v.get("not_passed", []):
            print(f"       verify: {line[:200]}")
    summary["ok"] = not failed
    summary["failures"] = failed
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    print(("arm64 check PASSED" if not failed else "arm64 check FAILED: " + "; ".join(map(str, failed)))
          + f" (details: {out / 'compare.json'})")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
