"""The training loop on synthetic faces: it learns, checkpoints, resumes exactly after a kill,
runs under torchrun, and its checkpoint exports into a working bundle; every architecture, loss
and regime takes real optimisation steps; the data pipeline pieces (median filter, sampler,
test-time augmentation) do what they claim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fer_edge.cli import main  # noqa: E402
from fer_edge.errors import InputError  # noqa: E402
from fer_edge.train.augment import median_filter  # noqa: E402
from fer_edge.train.config import TrainConfig, list_recipes, load_recipe, parse_overrides  # noqa: E402
from fer_edge.train.loop import Plateau, TrainStep, build_criterion_for, build_optimizer, train  # noqa: E402
from fer_edge.train.models import MODELS, create_model, set_trainable  # noqa: E402
from fer_edge.train.sampling import epoch_indices  # noqa: E402
from fer_edge.train.tta import predict_tta  # noqa: E402

from conftest import REPO, synthetic_faceset, write_synthetic_splits  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box has 2 shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """Synthetic faces as an ImageFolder tree with train/, val/ and test/ splits."""
    return write_synthetic_splits(tmp_path_factory.mktemp("synthetic-splits"), {"train": 10, "val": 4, "test": 4})


# Horizontal flips would mirror the synthetic bars into other classes' angles.
NO_FLIP = {"hflip": 0.0, "rotate_deg": 5.0}


def _cfg(data: Path, out: Path, epochs: int = 3, **extra) -> TrainConfig:
    return TrainConfig.from_dict({"arch": "tiny_fer", "data": str(data), "out": str(out), "epochs": epochs,
                                  "batch_size": 14, "lr": 0.05, "warmup_epochs": 0.5, "threads": 1, "seed": 3,
                                  "augment": NO_FLIP, **extra})


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny_fer checkpoint (seeded): a teacher, pretrained weights and a TTA subject
    whose values the tests compare exactly, so it needs no training."""
    from fer_edge.train.loop import checkpoint_payload, save_atomic

    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("small") / "small.pt"
    save_atomic(checkpoint_payload(create_model("tiny_fer").eval(), TrainConfig(), epoch=1), path)
    return path


def _cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


def test_train_cli_learns_and_writes_checkpoints(split_folder, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"description": "test", "arch": "tiny_fer", "augment": NO_FLIP, "lr": 0.05,
                                  "batch_size": 14, "warmup_epochs": 0.5}))
    code = main(["train", "--recipe", str(recipe), "--data", str(split_folder), "--out", str(out), "--epochs", "8",
                 "--threads", "1"])
    assert code == 0
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert max(r["val_accuracy"] for r in rows) > 0.3  # chance is 1/7
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["command"].startswith("fer-edge train --recipe")
    assert (out / "last.pt").is_file() and not list(out.glob("*.tmp"))


@pytest.mark.slow  # a training subprocess besides two runs in this one (about 20 s on the 2-core box)
def test_resume_after_sigkill_matches_an_uninterrupted_run(split_folder, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(split_folder, straight, epochs=3), log=lambda *_: None)

    killed = tmp_path / "killed"
    args = ["train", "--data", str(split_folder), "--out", str(killed), "--epochs", "3", "--batch-size", "14",
            "--lr", "0.05", "--threads", "1", "--seed", "3", "--arch", "tiny_fer", "--set", "warmup_epochs=0.5",
            "--set", "augment.hflip=0", "--set", "augment.rotate_deg=5"]
    proc = subprocess.Popen([sys.executable, "-m", "fer_edge.cli", *args], env=_cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (killed / "last.pt").is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-run: no chance to clean up
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(killed / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 3

    resumed = train(_cfg(split_folder, killed, epochs=3), resume=True, log=lambda *_: None)
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert [r["val_accuracy"] for r in _rows(straight)] == [r["val_accuracy"] for r in _rows(killed)]
    assert [r["epoch"] for r in _rows(killed)] == [1, 2, 3]
    assert resumed["epoch"] == b["best"]["epoch"]


def test_resume_without_a_checkpoint_is_a_clear_error(split_folder, tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        train(_cfg(split_folder, tmp_path / "none"), resume=True)


def test_recipes_load_and_unknown_options_are_refused(tmp_path):
    names = list_recipes()
    assert {"tiny-cpu", "base", "tiny", "liman-vgg19-ce", "liman-vgg19-triplet", "jahangir-vgg16-scratch",
            "dao-le-ir", "vgg16-median-transfer"} <= set(names)
    for name in names:
        cfg = load_recipe(name)
        assert cfg.arch in MODELS and cfg.epochs > 0
        assert json.loads((REPO / "fer_edge/train/recipes" / f"{name}.json").read_text())["description"]
    assert load_recipe("vgg16-median-transfer").input_spec["median"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": "tiny_fer", "epochz": 3}))
    with pytest.raises(InputError, match="epochz"):
        load_recipe(str(bad))
    with pytest.raises(InputError, match="known recipes"):
        load_recipe("no-such-recipe")


def test_bad_options_name_the_option_and_the_choices():
    with pytest.raises(InputError, match=r"optimizer='rmsprop'.*'sgd'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(InputError, match="median_filter"):
        TrainConfig(median_filter=4)
    with pytest.raises(InputError, match="distill_teacher"):
        TrainConfig(loss="distill")
    with pytest.raises(InputError, match="unknown augment options"):
        TrainConfig().override(augment={"hflipp": 0.5})
    assert parse_overrides(["lr=0.5", "augment.hflip=0", "pretrained=w.pth", "amp=off"]) == {
        "lr": 0.5, "augment": {"hflip": 0}, "pretrained": "w.pth", "amp": "off"}
    cfg = TrainConfig().override(**parse_overrides(["augment.hflip=0"]))
    assert cfg.augment.hflip == 0 and cfg.augment.rotate_deg == TrainConfig().augment.rotate_deg


def test_checkpoint_records_its_command_into_the_exported_bundle(split_folder, tmp_path):
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    out = tmp_path / "run"
    train(_cfg(split_folder, out, epochs=1), log=lambda *_: None, command="fer-edge train --test")
    bundle = export_bundle(out / "best.pt", tmp_path / "b", name="b", targets=("onnx",), precisions=("fp32",),
                           val=split_folder)
    assert Bundle.open(bundle).manifest.extra["commands"]["train"] == "fer-edge train --test"


# ------------------------------------------------------------------ every architecture, loss, regime

def _step(arch: str, loss: str = "ce", size: int = 32, **extra):
    cfg = TrainConfig(arch=arch, size=size, batch_size=7, lr=0.05, loss=loss, channels_last=False, **extra)
    model = create_model(arch)
    labels = np.arange(7)
    step = TrainStep(model, build_criterion_for(cfg, labels, torch.device("cpu")), build_optimizer(model, cfg), None,
                     cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    faces = synthetic_faceset(per_class=1, size=size)
    x, y = torch.from_numpy(faces.images).unsqueeze(1), torch.from_numpy(faces.labels)
    return model, step, x, y


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_architecture_takes_a_training_step(arch):
    model, step, x, y = _step(arch)
    before = _snapshot(model)
    loss, logits, _ = step(x, y)
    assert torch.isfinite(loss) and logits.shape == (7, 7)
    changed = _changed(before, model)
    assert any(k.startswith("features.") for k in changed) and any(k.startswith("classifier.") for k in changed)


@pytest.mark.parametrize("loss", ["ce", "triplet", "ce+triplet", "distill"])
def test_every_loss_trains(loss, small_checkpoint):
    extra = {"distill_teacher": str(small_checkpoint)} if loss == "distill" else {}
    model, step, x, y = _step("tiny_fer", loss, size=48, **extra)
    before = _snapshot(model)
    losses = [float(step(x, y)[0]) for _ in range(3)]
    assert all(np.isfinite(losses))
    changed = _changed(before, model)
    assert any(k.startswith("features.") for k in changed)
    # A pure triplet loss trains the embedding alone; the classifier gets no gradient.
    assert any(k.startswith("classifier.") for k in changed) == (loss != "triplet")


def test_transfer_regime_trains_only_the_classifier_and_keeps_trunk_statistics():
    model, step, x, y = _step("mobile_fer")
    set_trainable(model, "transfer")
    step.rewrap()
    before = _snapshot(model)
    model.train()
    for _ in range(2):
        step(x, y)
    changed = _changed(before, model)
    assert changed and all(k.startswith("classifier.") for k in changed)  # BN running stats too


def test_options_together_in_one_run(split_folder, tmp_path, small_checkpoint):
    """Pretrained weights, transfer then fine-tune, ce+triplet, class-balanced sampling and
    weights, median filter, plateau schedule, ten-crop validation and a final test in one run."""
    out = tmp_path / "run"
    pretrained = torch.load(small_checkpoint, weights_only=True)["model"]
    trunk = [k for k in pretrained if k.startswith("features.") and "num_batches" not in k]
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 1/2:"):  # logged once last.pt of the transfer epoch is on disk
            after_transfer = torch.load(out / "last.pt", weights_only=True)["model"]
            assert all(torch.equal(after_transfer[k], pretrained[k]) for k in trunk)

    cfg = _cfg(split_folder, out, epochs=2, pretrained=str(small_checkpoint), regime="finetune", transfer_epochs=1,
               loss="ce+triplet", sampler="balanced", class_weights="balanced", median_filter=3, schedule="plateau",
               tta="ten_crop", test_at_end=True, warmup_epochs=0)
    train(cfg, log=log)
    assert any(x.startswith("epoch 1: regime transfer") for x in lines)
    assert any(x.startswith("epoch 2: regime finetune") for x in lines)
    last = torch.load(out / "last.pt", weights_only=True)
    assert any(not torch.equal(last["model"][k], pretrained[k]) for k in trunk)  # unfrozen in epoch 2
    assert last["input"]["median"] == 3 and last["config"]["sampler"] == "balanced"
    assert torch.load(out / "best.pt", weights_only=True)["val"]["tta"] == "ten_crop"
    assert set(json.loads((out / "test.json").read_text())["results"]) == {"none", "ten_crop"}


def test_time_budget_stops_after_a_saved_epoch_and_resume_finishes(split_folder, tmp_path):
    out = tmp_path / "run"
    lines: list[str] = []
    result = train(_cfg(split_folder, out, epochs=3, time_budget_min=0.001), log=lines.append)
    assert "time budget" in result["stopped"] and "--resume" in lines[-1]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    train(_cfg(split_folder, out, epochs=3), resume=True, log=lambda *_: None)
    assert [r["epoch"] for r in _rows(out)] == [1, 2, 3]


def _torchrun(args: list[str]) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fer_edge.cli", "train", *args]
    proc = subprocess.Popen(cmd, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too, not only the launcher
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


@pytest.mark.slow  # two torchrun launches, each starting two torch processes
def test_torchrun_two_processes_train_one_model_and_resume(split_folder, tmp_path):
    out = tmp_path / "ddp"
    args = ["--data", str(split_folder), "--out", str(out), "--epochs", "2", "--batch-size", "14", "--threads", "1",
            "--set", "augment.hflip=0"]
    stdout = _torchrun([*args, "--time-budget", "0.001"])  # stops cleanly after epoch 1
    assert "x 2 processes" in stdout and stdout.count("epoch 1/2:") == 1  # rank 0 alone logs
    assert "time budget" in stdout
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["rng"]) == 2 and last["epoch"] == 1
    stdout = _torchrun([*args, "--resume"])
    assert "resumed" in stdout and "warning" not in stdout
    assert [r["epoch"] for r in _rows(out)] == [1, 2]


@pytest.mark.slow
def test_torch_compile_trains():
    model, step, x, y = _step("tiny_fer", compile="aot_eager")
    before = _snapshot(model)
    assert torch.isfinite(step(x, y)[0])
    assert _changed(before, model)


# ------------------------------------------------------------------ data pipeline pieces

def test_median_filter_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 1, 12, 10), dtype=np.uint8)
    for k in (3, 5):
        p = k // 2
        padded = np.pad(images[:, 0], ((0, 0), (p, p), (p, p)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
        expected = np.median(windows.reshape(*windows.shape[:3], -1), axis=-1).astype(np.uint8)
        np.testing.assert_array_equal(median_filter(torch.from_numpy(images), k)[:, 0].numpy(), expected)
    with pytest.raises(InputError, match="odd"):
        median_filter(torch.from_numpy(images), 2)


def test_balanced_sampler_evens_out_classes_and_random_is_a_permutation():
    labels = torch.tensor([0] * 90 + [1] * 10)
    drawn = labels[epoch_indices(labels, 50, 100, torch.Generator().manual_seed(0), "balanced").flatten()]
    assert abs(float((drawn == 1).float().mean()) - 0.5) < 0.03
    perm = epoch_indices(labels, 1, 100, torch.Generator().manual_seed(0), "random")
    assert sorted(perm.flatten().tolist()) == list(range(100))


def test_plateau_reduces_after_patience_epochs_without_improvement():
    p = Plateau("max", patience=1, factor=0.5)
    assert [p.step(v) for v in (0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7)] == [False, False, False, True, False, False, True]
    assert p.scale == 0.25


@pytest.fixture(scope="module")
def net_and_faces(small_checkpoint):
    ckpt = torch.load(small_checkpoint, weights_only=True)
    model = create_model("tiny_fer")
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["input"], synthetic_faceset(per_class=2, seed=5).images


def test_tta_modes_agree_with_direct_forward_passes(net_and_faces):
    model, spec, images = net_and_faces
    x = (torch.from_numpy(images).unsqueeze(1).float() / 255 - spec["mean"][0]) / spec["std"][0]
    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(-1))
    torch.testing.assert_close(predict_tta(model, images, spec, "none"), plain)
    flip = predict_tta(model, images, spec, "flip")
    torch.testing.assert_close(flip.exp(), (plain.softmax(1) + mirrored.softmax(1)) / 2)
    # Full-size "crops" are the image itself: ten-crop degenerates to the flip average.
    torch.testing.assert_close(predict_tta(model, images, spec, "ten_crop", crop=1.0), flip)
    ten = predict_tta(model, images, spec, "ten_crop", crop=0.8)
    assert ten.shape == (len(images), 7) and torch.allclose(ten.exp().sum(1), torch.ones(len(images)))
    emb = predict_tta(model, images, spec, "none", output="embedding")
    torch.testing.assert_close(emb, model.forward_features(x).detach())


def test_tta_applies_the_checkpoint_median_filter_and_refuses_bad_input(net_and_faces):
    model, spec, images = net_and_faces
    filtered = median_filter(torch.from_numpy(images).unsqueeze(1), 3)
    torch.testing.assert_close(predict_tta(model, images, {**spec, "median": 3}, "flip"),
                               predict_tta(model, filtered, spec, "flip"))
    with pytest.raises(InputError, match="uint8"):
        predict_tta(model, images.astype(np.float32), spec)
    with pytest.raises(InputError, match=r"\(N, 48, 48\)"):
        predict_tta(model, images[:, :40], spec)
    with pytest.raises(InputError, match="TTA mode"):
        predict_tta(model, images, spec, "five_crop")


# ------------------------------------------------------------------ the real data set

@pytest.mark.slow
@pytest.mark.dataset
def test_a_short_cpu_run_on_fer2013_learns_and_exports(fer2013, tmp_path):
    from fer_edge.evaluate import evaluate_matrix
    from fer_edge.export import export_bundle

    out = tmp_path / "run"
    cfg = load_recipe("tiny-cpu").override(data=str(fer2013), out=str(out), epochs=4, limit_per_class=600,
                                           batch_size=64, lr=0.05, warmup_epochs=0.5, threads=2)
    best = train(cfg, log=lambda *_: None, command="fer-edge train --test")
    assert best["val_accuracy"] > 0.25  # chance 1/7; 4 epochs of at most 600 faces per class
    bundle = export_bundle(out / "best.pt", tmp_path / "bundle", name="short", targets=("onnx",),
                           precisions=("fp32",), val=fer2013)
    result = evaluate_matrix(str(bundle), str(fer2013), "test", limit_per_class=50)
    assert next(iter(result["runs"].values()))["accuracy"] > 0.2
