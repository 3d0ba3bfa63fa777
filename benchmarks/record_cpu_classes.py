"""Record one CPU class's peers run (benchmarks/peers.py --json) into the packaged bundles' manifests and cards.

    python benchmarks/record_cpu_classes.py benchmarks/peers.json --cpu-class "x86-64 AVX-512 VNNI" \
        --cpu "Intel Xeon, 2 cores"
    python benchmarks/record_cpu_classes.py benchmarks/peers-avx2.json      # class and CPU from the run itself

Each packaged model's `auto` row of the run (ms per crop p50, the pair `auto` served, accuracy on all
FER2013 test crops) and `fer`'s row go to every packaged bundle's manifest (`extra.cpu_classes`), and
its MODEL_CARD.md is rewritten from it (hashes refreshed: `fer-edge verify` keeps passing), so each
card says which model to pick on that CPU class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def entry(run: dict, cpu: str, source: str) -> dict:
    fer = next(r for r in run["rows"] if r["name"].startswith("fer "))
    models = {}
    for r in run["rows"]:
        model = r["name"].removeprefix("fer_edge ")
        if r["name"].startswith("fer_edge ") and r.get("requested") == "auto/auto" and model not in models:
            models[model] = {"ms_per_crop": r["ms_per_crop"]["p50"], "accuracy": r["accuracy"],
                             "macro_f1": r["macro_f1"], "served": f"{r['runtime'].split()[0]}/{r['precision']}"}
    return {"cpu": cpu, "date": run["date"][:10], "command": run["command"], "source": source,
            "load_avg": [run.get("load_avg_start", [None])[0], run.get("load_avg_end", [None])[0]],
            "fer_ms_per_crop": fer["ms_per_crop"]["p50"], "fer_accuracy": fer["accuracy"], "models": models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peers_json")
    ap.add_argument("--cpu-class", help="default: the run's own cpu_class")
    ap.add_argument("--cpu", help="default: the run's own cpu")
    ap.add_argument("--models-dir", default=str(REPO / "fer_edge" / "models"))
    args = ap.parse_args()

    from fer_edge.export.record import record_cpu_speed

    run = json.loads(Path(args.peers_json).read_text())
    cls, cpu = args.cpu_class or run.get("cpu_class"), args.cpu or run.get("cpu")
    if not cls or not cpu:
        raise SystemExit(f"{args.peers_json} does not say its CPU: give --cpu-class and --cpu")
    e = entry(run, cpu, Path(args.peers_json).name)
    for folder in sorted(Path(args.models_dir).iterdir()):
        if (folder / "manifest.json").exists():
            record_cpu_speed(folder, cls, e)
            print(f"recorded {cls} into {folder.name}")


if __name__ == "__main__":
    main()
