"""The table of a device session's training runs, from the records it brought back.

Each run folder holds what `fer_edge.train.session` returned: config.json, metrics.jsonl (one
line per epoch) and test.json (best.pt on FER2013 test, plain and with the test-time mode).

    python benchmarks/runs_table.py docs/runs/h200-2026-11-30 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_row(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    test = json.loads((folder / "test.json").read_text()) if (folder / "test.json").is_file() else {}
    results = test.get("results", {})
    best = next((r for r in epochs if r["epoch"] == test.get("epoch")), max(epochs, key=lambda r: r["val_accuracy"]))

    def pct(mode: str, key: str) -> float | None:
        r = results.get(mode)
        return round(100 * r[key], 2) if r else None

    return {"run": folder.name, "arch": cfg["arch"], "batch": cfg["batch_size"], "lr": cfg["lr"],
            "epochs": len(epochs), "best_epoch": best["epoch"], "val": round(100 * best["val_accuracy"], 2),
            "test": pct("none", "accuracy"), "test_f1": pct("none", "macro_f1"),
            "test_ten_crop": pct("ten_crop", "accuracy"), "test_ten_crop_f1": pct("ten_crop", "macro_f1"),
            "train_min": round(sum(r["seconds"] for r in epochs) / 60, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [run_row(f) for f in sorted(args.folder.iterdir()) if (f / "metrics.jsonl").is_file()]
    cols = ["run", "arch", "batch", "lr", "epochs", "best_epoch", "val", "test", "test_f1", "test_ten_crop",
            "test_ten_crop_f1", "train_min"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
