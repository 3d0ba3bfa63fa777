"""One device call that trains a plan of runs side by side and brings their results back.

A lent GPU comes for minutes, runs one command at a time and returns at most a few files, so a
session is planned as phases of `fer-edge train` processes sharing the GPU (small nets leave most
of it idle), each with a time budget cut to a common deadline; a phase can wait for runs of an
earlier one (a student for its teacher). Results are packed as soon as each run ends, so a call
stopped at its limit still returns what had finished.

    python3 -m fer_edge.train.session PLAN.json --out "$OUT" --minutes 8.8

PLAN.json: {"data_archive": ".data/fer2013.tar.xz",
            "phases": [{"after": [], "runs": [{"name": "base", "args": ["--recipe", "base"],
                                               "minutes": 4.7, "bring": "fp32"}]}, ...]}
`minutes` is the run's budget (default: until the deadline); `bring` is fp32 (best.pt as is),
fp16 (weights halved, for nets too large to return whole) or none (metrics and logs only).
`{runs}` in an argument stands for the runs folder (`--runs`), so a student names its teacher
as "{runs}/teacher/best.pt" wherever the runs write. The plan is checked before anything starts (`check_plan`: names, phases, teachers), and
`--check` only checks it. `--extra "..."` appends arguments to every run: the same plan as a CPU
smoke test on a slice (`--extra "--limit-per-class 20 --epochs 2 --device cpu"`) before GPU time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

PART = 15 * 2**20  # a returned file's size limit is 16 MiB
SMALL = 4 * 2**20  # weights up to this size travel inside results.tar
RESERVE_MIN = 0.4  # after the last run: packing and copying


BRING = ("fp32", "fp16", "none")


class PlanError(ValueError):
    """A plan that would waste device time: says which run and what is wrong."""


def expand(args: list[str], runs_dir: Path) -> list[str]:
    """A run's arguments with `{runs}` replaced by the runs folder."""
    return [a.replace("{runs}", str(runs_dir)) for a in args]


def check_plan(plan: Any, runs_dir: Path) -> None:
    """Refuse, before any GPU time is spent, a plan whose runs cannot all start: a run without a
    name or args, a duplicate name, an unknown `bring`, a phase waiting for a run of no earlier
    phase, or a `--teacher` that is neither a file here nor the best.pt of a run its phase waits for."""
    if not isinstance(plan, dict) or not isinstance(plan.get("phases"), list) or not plan["phases"]:
        raise PlanError("a plan is {\"phases\": [{\"runs\": [...]}, ...]} with at least one phase")
    seen: set[str] = set()
    for i, phase in enumerate(plan["phases"]):
        waits = phase.get("after", [])
        unknown = [n for n in waits if n not in seen]
        if unknown:
            raise PlanError(f"phase {i} waits for {unknown}, which no earlier phase runs (earlier runs: {sorted(seen)})")
        runs, phase_names = phase.get("runs"), set()
        if not isinstance(runs, list) or not runs:
            raise PlanError(f"phase {i} has no runs")
        for spec in runs:
            name, args = spec.get("name"), spec.get("args")
            if not isinstance(name, str) or not name or "/" in name:
                raise PlanError(f"phase {i}: a run needs a plain name, got {name!r}")
            if name in seen or name in phase_names:
                raise PlanError(f"run name {name!r} is used twice")
            phase_names.add(name)
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise PlanError(f"run {name!r}: args must be a list of strings")
            if spec.get("bring", "none") not in BRING:
                raise PlanError(f"run {name!r}: bring must be one of {BRING}, got {spec.get('bring')!r}")
            if "minutes" in spec and not (isinstance(spec["minutes"], (int, float)) and spec["minutes"] > 0):
                raise PlanError(f"run {name!r}: minutes must be a positive number, got {spec['minutes']!r}")
            args = expand(args, runs_dir)
            if "--teacher" in args:
                at = args.index("--teacher") + 1
                teachers = args[at].split(",") if at < len(args) else []
                made = {str(runs_dir / w / "best.pt") for w in waits}
                missing = [t for t in teachers if t not in made and not Path(t).is_file()]
                if not teachers or missing:
                    raise PlanError(f"run {name!r}: teacher {missing or '(none given)'} is neither a file here nor the "
                                    f"best.pt of a run its phase waits for ({sorted(made) or 'none'}); "
                                    f"runs write under {runs_dir}")
        seen |= phase_names


class Session:
    def __init__(self, plan: dict[str, Any], out: Path, minutes: float, runs_dir: Path, budget_mib: float,
                 extra: list[str] | None = None):
        self.plan, self.out, self.runs_dir = plan, out, runs_dir
        self.extra = list(extra or [])
        self.t0 = time.time()
        self.deadline = self.t0 + minutes * 60
        self.budget = budget_mib * 2**20
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.small: dict[str, bytes] = {}
        self.summary: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": {}}

    def minutes_left(self) -> float:
        return (self.deadline - time.time()) / 60 - RESERVE_MIN

    def start(self, spec: dict[str, Any]) -> None:
        name = spec["name"]
        budget = min(float(spec.get("minutes", 1e9)), self.minutes_left())
        if budget < 0.5:
            self.summary["runs"][name] = {"skipped": f"only {budget:.2f} min left"}
            return
        run_dir = self.runs_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "fer_edge.cli", "train", *expand(spec["args"], self.runs_dir), *self.extra, "--out", str(run_dir),
               "--time-budget", f"{budget:.2f}"]
        self.logs[name] = log = open(run_dir / "train.log", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                                            "PYTHONUNBUFFERED": "1"})
        self.specs[name] = spec
        self.summary["runs"][name] = {"command": " ".join(cmd[1:]), "budget_min": round(budget, 2),
                                      "start_s": round(time.time() - self.t0, 1)}
        print(f"[{time.time() - self.t0:6.1f}s] start {name} ({budget:.2f} min)", flush=True)

    def poll(self) -> list[str]:
        done = []
        for name, p in list(self.procs.items()):
            if p.poll() is not None:
                del self.procs[name]
                self.logs.pop(name).close()
                self.finish(name, p.returncode)
                done.append(name)
        return done

    def finish(self, name: str, rc: int) -> None:
        run_dir = self.runs_dir / name
        info = self.summary["runs"][name]
        info.update(rc=rc, end_s=round(time.time() - self.t0, 1))
        test = run_dir / "test.json"
        if test.is_file():
            res = json.loads(test.read_text())
            info["test"] = {m: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                            for m, r in res.get("results", {}).items()}
            info["best_epoch"] = res.get("epoch")
        print(f"[{time.time() - self.t0:6.1f}s] end {name} rc={rc} {info.get('test', '')}", flush=True)
        self.pack(name)

    def pack(self, name: str) -> None:
        """metrics, logs and test figures of every run go into one results.tar, rewritten as runs
        end; weights as the plan says, while they fit the budget: small ones inside results.tar,
        large ones as their own parts (the return limit counts files as well as bytes)."""
        import torch

        run_dir = self.runs_dir / name
        for f in ("metrics.jsonl", "test.json", "config.json", "train.log"):
            if (run_dir / f).is_file():
                self.small[f"{name}/{f}"] = (run_dir / f).read_bytes()
        bring, best = self.specs[name].get("bring", "none"), run_dir / "best.pt"
        if bring != "none" and best.is_file():
            ckpt = torch.load(best, map_location="cpu", weights_only=True)
            if bring == "fp16":
                ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
                ckpt["weights_stored_as"] = "float16 (halved to fit the device's return limit)"
            raw = io.BytesIO()
            torch.save(ckpt, raw)
            data = raw.getvalue()
            used = sum(f.stat().st_size for f in self.out.iterdir() if f.name != "results.tar")
            used += sum(len(v) for v in self.small.values())
            if used + len(data) > self.budget:
                self.summary["runs"][name]["weights"] = f"left behind: {len(data) / 2**20:.1f} MiB over budget"
            elif len(data) <= SMALL:
                self.small[f"{name}/best.pt"] = data
                self.summary["runs"][name]["weights"] = f"{bring}, {len(data) / 2**20:.1f} MiB in results.tar"
            else:
                for i in range(0, len(data), PART):
                    (self.out / f"{name}.pt.{i // PART}").write_bytes(data[i:i + PART])
                self.summary["runs"][name]["weights"] = (f"{bring}, {len(data) / 2**20:.1f} MiB as {name}.pt.* "
                                                         "(cat them in order)")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for arc, data in self.small.items():
                ti = tarfile.TarInfo(arc)
                ti.size, ti.mtime = len(data), int(time.time())
                tar.addfile(ti, io.BytesIO(data))
        tmp = self.out / "results.tar.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, self.out / "results.tar")
        self.write_summary()

    def write_summary(self) -> None:
        self.summary["elapsed_s"] = round(time.time() - self.t0, 1)
        (self.out / "session.json").write_text(json.dumps(self.summary, indent=2))

    def run(self) -> None:
        finished: set[str] = set()
        for phase in self.plan["phases"]:
            waits = set(phase.get("after", []))
            while waits - finished and any(n in self.procs for n in waits):
                time.sleep(1)
                finished.update(self.poll())
            for spec in phase["runs"]:
                self.start(spec)
        while self.procs:
            time.sleep(1)
            finished.update(self.poll())
            if time.time() > self.deadline:  # a run that ignored its budget: stop it, keep its last save
                for name, p in self.procs.items():
                    print(f"deadline: terminating {name}", flush=True)
                    p.terminate()
        self.write_summary()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan")
    ap.add_argument("--out", required=True, help="folder whose files come back (at most 8, 16 MiB each)")
    ap.add_argument("--minutes", type=float, default=8.8, help="deadline for everything, from now")
    ap.add_argument("--runs", default="runs/session", help="where the runs write")
    ap.add_argument("--budget-mib", type=float, default=60.0, help="total size of the returned files")
    ap.add_argument("--extra", default="", help="arguments appended to every run's (a CPU smoke test on a slice)")
    ap.add_argument("--check", action="store_true", help="check the plan and exit")
    args = ap.parse_args(argv)
    try:
        plan = json.loads(Path(args.plan).read_text())
        check_plan(plan, Path(args.runs))
    except (OSError, ValueError) as e:  # PlanError and json.JSONDecodeError are ValueErrors
        print(f"plan {args.plan}: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"plan {args.plan}: {sum(len(p['runs']) for p in plan['phases'])} runs in {len(plan['phases'])} phases, ok")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    archive = plan.get("data_archive")
    if archive and Path(archive).is_file():
        subprocess.run(["tar", "-C", str(Path(archive).parent), "-xJf", archive], check=True)
        print(f"unpacked {archive} in {time.time() - t:.1f} s", flush=True)
    session = Session(plan, out, args.minutes - (time.time() - t) / 60, Path(args.runs), args.budget_mib,
                      shlex.split(args.extra))
    session.run()
    print(json.dumps(session.summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
