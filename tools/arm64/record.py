"""Record a whole-split arm64 run (tools/arm64/measure.py, from `check.sh --full`) into the packaged
bundles through fer_edge.export.record_cpu_class: the arm64 figures beside the x86 ones, the arm64
gate verdict (what `auto` must avoid there) and the golden thresholds verify applies on arm64.

    python tools/arm64/record.py .cache/arm64/out/arm64.json --note "qemu-user 7.2 emulation on ..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fer_edge.bundle import resolve_model
from fer_edge.export.record import record_cpu_class


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="measure.py's JSON of a whole-split run on the other CPU class")
    ap.add_argument("--note", default="", help="how it ran (e.g. emulated), kept with the machine description")
    args = ap.parse_args(argv)
    run = json.loads(Path(args.run).read_text())
    machine = {**run["machine"], **({"note": args.note} if args.note else {})}
    for name, model in run["models"].items():
        verdict = record_cpu_class(resolve_model(name), model, cls=run["cpu_class"], machine=machine,
                                   command=run["command"], date=run["date"])
        print(f"{name}: {run['cpu_class']} gate {verdict['status']}, accuracy drop vs x86 (pp) {verdict['drops_pp']}"
              + (f", auto avoids {verdict['failed_artifacts']} there" if verdict["failed_artifacts"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
