"""What a fixed GPU budget needs from the loop: an EMA of the weights that is what gets validated
and kept, a cosine schedule stretched over the time budget, several teachers averaged, a final
test mode apart from validation's, and the session runner that trains a plan of runs in one call
and packs what they made."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fer_edge.errors import InputError  # noqa: E402
from fer_edge.train.config import TrainConfig  # noqa: E402
from fer_edge.train.ema import EMA  # noqa: E402
from fer_edge.train.loop import BudgetClock, lr_factor, train  # noqa: E402
from fer_edge.train.losses import load_teacher  # noqa: E402
from fer_edge.train.models import create_model  # noqa: E402

from conftest import REPO, write_synthetic_splits  # noqa: E402


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Path:
    return write_synthetic_splits(tmp_path_factory.mktemp("budget-splits"), {"train": 8, "val": 3, "test": 3})


def _cfg(data: Path, out: Path, **extra) -> TrainConfig:
    return TrainConfig.from_dict({"arch": "nano_fer", "data": str(data), "out": str(out), "epochs": 2,
                                  "batch_size": 14, "lr": 0.05, "warmup_epochs": 0, "threads": 1, "seed": 1,
                                  "augment": {"hflip": 0.0}, **extra})


def test_ema_follows_the_formula_and_applied_restores_the_live_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(5)
    ema.update()  # first update: decay ramps to min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["0.weight"], d * start["0.weight"] + (1 - d) * model[0].weight)
    assert int(ema.shadow["1.num_batches_tracked"]) == 5  # integer buffers are copied, not averaged
    live = model[0].weight.detach().clone()
    with ema.applied(model):
        assert torch.equal(model[0].weight, ema.shadow["0.weight"])
    assert torch.equal(model[0].weight, live)
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(model, 1.0)


def test_best_checkpoint_holds_the_averaged_weights(splits, tmp_path):
    out = tmp_path / "run"
    train(_cfg(splits, out, ema_decay=0.5, epochs=2), log=lambda *_: None)
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    shadow = last["ema"]["shadow"]
    assert last["ema"]["updates"] > 0
    if best["epoch"] == last["epoch"]:  # best.pt of the last epoch is exactly the EMA's state
        assert all(torch.equal(best["model"][k], shadow[k]) for k in shadow)
    assert any(not torch.equal(last["model"][k], shadow[k]) for k in shadow if shadow[k].is_floating_point())


def test_cosine_runs_over_the_time_budget(splits, tmp_path, monkeypatch):
    cfg = _cfg(splits, tmp_path, schedule_by_time=True, time_budget_min=1.0, epochs=1000)
    assert lr_factor(50, 10, cfg, progress=0.0) == pytest.approx(1.0)
    assert lr_factor(50, 10, cfg, progress=0.5) == pytest.approx(0.5)
    assert lr_factor(50, 10, cfg, progress=1.5) == pytest.approx(0.0)
    now = [1000.0]
    monkeypatch.setattr("fer_edge.train.loop.time.time", lambda: now[0])
    clock = BudgetClock(cfg, t_start=990.0)  # 10 s spent on data before training
    clock.observe([5.0, 2.0])  # reserve = 1.1 * 2 + 5 = 7.2 s (no final test)
    now[0] += (60 - 10 - 7.2) / 2
    assert clock.progress() == pytest.approx(0.5)
    resumed = BudgetClock(cfg, t_start=now[0], elapsed=clock.elapsed())  # a resumed call keeps its place
    assert resumed.elapsed() == pytest.approx(clock.elapsed())


def test_a_time_scheduled_run_anneals_to_zero_and_says_why_it_stopped(splits, tmp_path):
    out = tmp_path / "run"
    result = train(_cfg(splits, out, schedule_by_time=True, time_budget_min=0.1, epochs=1000, test_at_end=True,
                        tta="none", test_tta="flip"), log=lambda *_: None)
    assert "schedule complete" in result["stopped"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] < 0.05 * 0.2 and len(rows) < 1000
    test = json.loads((out / "test.json").read_text())
    assert set(test["results"]) == {"none", "flip"} and test["n"] == 7 * 3 and test["limit_per_class"] is None


def test_a_quick_check_on_a_slice_tests_on_the_same_slice(splits, tmp_path):
    """--limit-per-class slices test/ as it slices train/ and val/ (a CPU smoke test of a GPU plan
    must not spend minutes on the full test split), and test.json says it was a slice."""
    out = tmp_path / "run"
    train(_cfg(splits, out, epochs=1, limit_per_class=2, test_at_end=True, tta="none"), log=lambda *_: None)
    test = json.loads((out / "test.json").read_text())
    assert test["n"] == 7 * 2 and test["limit_per_class"] == 2


def test_schedule_by_time_and_ema_are_checked():
    with pytest.raises(InputError, match="schedule_by_time"):
        TrainConfig(schedule_by_time=True)  # no time budget
    with pytest.raises(InputError, match="schedule_by_time"):
        TrainConfig(schedule_by_time=True, time_budget_min=1, schedule="plateau")
    with pytest.raises(InputError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(InputError, match="test_tta"):
        TrainConfig(test_tta="five_crop")


def test_several_teachers_average_their_logits(tmp_path):
    from fer_edge.train.loop import checkpoint_payload, save_atomic

    paths = []
    for seed, arch in ((1, "nano_fer"), (2, "nano_fer_d")):
        torch.manual_seed(seed)
        p = tmp_path / f"t{seed}.pt"
        save_atomic(checkpoint_payload(create_model(arch).eval(), TrainConfig(arch=arch), epoch=1), p)
        paths.append(p)
    x = torch.randint(0, 256, (5, 1, 48, 48), dtype=torch.uint8)
    one, two = (load_teacher(p, "cpu")(x) for p in paths)
    both = load_teacher(f"{paths[0]},{paths[1]}", "cpu")
    assert torch.allclose(both(x), (one + two) / 2, atol=1e-6)
    assert str(paths[1]) in both.source
    with pytest.raises(InputError, match="teacher not found"):
        load_teacher(f"{paths[0]},{tmp_path / 'missing.pt'}", "cpu")


@pytest.mark.slow  # three training subprocesses, each importing torch (about 30 s on the 2-core box)
def test_session_runs_a_teacher_then_its_student_and_packs_both(splits, tmp_path):
    from fer_edge.train import session

    runs, out = tmp_path / "runs", tmp_path / "out"
    common = ["--data", str(splits), "--epochs", "1", "--batch-size", "14"]
    plan = {"phases": [
        {"runs": [{"name": "teacher", "args": ["--arch", "nano_fer", *common], "bring": "fp32"}]},
        {"after": ["teacher"], "runs": [
            {"name": "student", "args": ["--arch", "nano_fer", "--loss", "distill", "--teacher",
                                         "{runs}/teacher/best.pt", *common], "bring": "fp16"},
            {"name": "metrics-only", "args": ["--arch", "nano_fer", *common], "bring": "none"}]}]}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + env_path if env_path else "")
    try:
        assert session.main([str(plan_path), "--out", str(out), "--minutes", "5", "--runs", str(runs),
                             "--extra", "--threads 1 --device cpu"]) == 0
    finally:
        if env_path is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_path
    summary = json.loads((out / "session.json").read_text())
    assert {n: r["rc"] for n, r in summary["runs"].items()} == {"teacher": 0, "student": 0, "metrics-only": 0}
    assert summary["runs"]["student"]["start_s"] >= summary["runs"]["teacher"]["end_s"]
    with tarfile.open(out / "results.tar") as tar:
        names = set(tar.getnames())
        student = torch.load(tar.extractfile("student/best.pt"), weights_only=True)
    assert {"teacher/best.pt", "teacher/metrics.jsonl", "student/train.log", "metrics-only/metrics.jsonl"} <= names
    assert "metrics-only/best.pt" not in names
    assert student["model"]["classifier.1.weight"].dtype == torch.float16 and "float16" in student["weights_stored_as"]
    assert "--teacher" in student["command"]
    assert f"--teacher {runs / 'teacher' / 'best.pt'}" in summary["runs"]["student"]["command"]
    assert all("--threads 1 --device cpu --out" in r["command"] for r in summary["runs"].values())


def test_session_refuses_a_plan_that_cannot_run_before_starting(tmp_path, capsys):
    from fer_edge.train.session import PlanError, check_plan, main

    runs = tmp_path / "runs"
    ok = {"phases": [{"runs": [{"name": "t", "args": []}]},
                     {"after": ["t"], "runs": [{"name": "s", "args": ["--teacher", str(runs / "t" / "best.pt")]}]}]}
    check_plan(ok, runs)
    bad = [
        ({"phases": []}, "at least one phase"),
        ({"phases": [{"runs": [{"name": "a", "args": []}, {"name": "a", "args": []}]}]}, "used twice"),
        ({"phases": [{"after": ["x"], "runs": [{"name": "a", "args": []}]}]}, "no earlier phase runs"),
        ({"phases": [{"runs": [{"name": "a", "args": [], "bring": "fp8"}]}]}, "bring must be one of"),
        ({"phases": [{"runs": [{"name": "a", "args": "--epochs 2"}]}]}, "list of strings"),
        ({"phases": [{"runs": [{"name": "a", "args": [], "minutes": 0}]}]}, "minutes must be"),
        # The student waits for nothing: the teacher would not exist when it starts.
        ({"phases": [{"runs": [{"name": "t", "args": []},
                               {"name": "s", "args": ["--teacher", str(runs / "t" / "best.pt")]}]}]}, "neither a file"),
    ]
    for plan, message in bad:
        with pytest.raises(PlanError, match=message):
            check_plan(plan, runs)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(bad[2][0]))
    assert main([str(path), "--out", str(tmp_path / "out"), "--runs", str(runs)]) == 2
    assert "no earlier phase runs" in capsys.readouterr().err and not (tmp_path / "out").exists()
    path.write_text(json.dumps(ok))
    assert main([str(path), "--out", str(tmp_path / "out"), "--runs", str(runs), "--check"]) == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("plan", sorted((REPO / "fer_edge" / "train" / "plans").glob("*.json")), ids=lambda p: p.stem)
def test_committed_plans_are_valid(plan):
    """Every committed plan passes the check; a plan that reuses an earlier call's teacher (call 2
    on the machine still warm) passes once that teacher is there, and names it."""
    from fer_edge.train.session import PlanError, check_plan

    data = json.loads(plan.read_text())
    try:
        check_plan(data, Path("runs/session"))
    except PlanError as e:
        assert "teacher" in str(e) and "warm" in data["description"]


def test_mixup_blends_a_batch_with_a_permutation_of_itself():
    from fer_edge.train.augment import AugmentConfig, MixedTargets, mix

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 12, 12), torch.arange(8)  # distinct labels: targets.b is the permutation
    assert mix(x, y, AugmentConfig()) == (x, y)  # off by default
    mixed, t = mix(x, y, AugmentConfig(mixup_alpha=0.4), torch.Generator().manual_seed(1))
    assert isinstance(t, MixedTargets) and 0 < t.lam < 1 and torch.equal(t.a, y)
    assert sorted(t.b.tolist()) == list(range(8)) and not torch.equal(t.b, y)
    torch.testing.assert_close(mixed, t.lam * x + (1 - t.lam) * x[t.b])


def test_cutmix_pastes_a_box_and_lam_is_the_share_kept():
    from fer_edge.train.augment import AugmentConfig, mix

    torch.manual_seed(3)
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6)
    mixed, t = mix(x, y, AugmentConfig(cutmix_alpha=1.0), torch.Generator().manual_seed(2))
    from_self = (mixed == x).all(dim=(0, 1))  # (H, W): pixels kept in every image
    from_other = (mixed == x[t.b]).all(dim=(0, 1))
    assert (from_self | from_other).all() and from_other.any()
    assert t.lam == pytest.approx(from_self.float().mean().item())


def test_mixed_targets_blend_the_two_losses_and_a_triplet_loss_refuses_them():
    from fer_edge.train.augment import MixedTargets
    from fer_edge.train.losses import TripletConfig, build_criterion

    torch.manual_seed(0)
    logits, emb = torch.randn(6, 7), torch.randn(6, 16)
    a, b = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([5, 4, 3, 2, 1, 0])
    ce = build_criterion("ce", num_classes=7, label_smoothing=0.1)
    got, _ = ce(logits, emb, MixedTargets(a, b, 0.3))
    want = 0.3 * ce(logits, emb, a)[0] + 0.7 * ce(logits, emb, b)[0]
    torch.testing.assert_close(got, want)
    with pytest.raises(InputError, match="one class per image"):
        build_criterion("ce+triplet", num_classes=7, triplet=TripletConfig())(logits, emb, MixedTargets(a, b, 0.3))
    with pytest.raises(InputError, match="mixup_alpha"):
        TrainConfig(loss="triplet").override(augment={"mixup_alpha": 0.2})
    with pytest.raises(InputError, match="cutmix_alpha is a Beta"):
        TrainConfig().override(augment={"cutmix_alpha": -1})


def test_a_distilled_run_with_mixup_and_cutmix_trains_and_tests(splits, tmp_path):
    """The student and its teacher see the same mixed images; the run ends with a test.json."""
    teacher_out, out = tmp_path / "teacher", tmp_path / "student"
    train(_cfg(splits, teacher_out, epochs=1), log=lambda *_: None)
    result = train(_cfg(splits, out, loss="distill", distill_teacher=str(teacher_out / "best.pt"), test_at_end=True,
                        augment={"hflip": 0.0, "mixup_alpha": 0.4, "cutmix_alpha": 1.0}), log=lambda *_: None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    assert json.loads((out / "config.json").read_text())["augment"]["mixup_alpha"] == 0.4
    assert "none" in result["test"]
