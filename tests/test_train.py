"""The training loop on synthetic faces: it learns, checkpoints, resumes exactly, and its
checkpoint exports into a working bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fer_edge.cli import main  # noqa: E402
from fer_edge.train.config import TrainConfig, list_recipes, load_recipe  # noqa: E402
from fer_edge.train.loop import train  # noqa: E402

from conftest import synthetic_faceset  # noqa: E402


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """Synthetic faces as an ImageFolder tree with train/ and val/ splits."""
    from PIL import Image

    root = tmp_path_factory.mktemp("synthetic-splits")
    for split, seed, per_class in (("train", 0, 10), ("val", 1, 4)):
        faces = synthetic_faceset(per_class=per_class, seed=seed)
        for i, (img, label) in enumerate(zip(faces.images, faces.labels)):
            d = root / split / faces.classes[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


# Horizontal flips would mirror the synthetic bars into other classes' angles.
NO_FLIP = {"hflip": 0.0, "rotate_deg": 5.0}


def _cfg(data: Path, out: Path, epochs: int = 3) -> TrainConfig:
    return TrainConfig.from_dict({"arch": "tiny_fer", "data": str(data), "out": str(out), "epochs": epochs,
                                  "batch_size": 14, "lr": 0.05, "warmup_epochs": 0.5, "threads": 1, "seed": 3,
                                  "augment": NO_FLIP})


def test_train_cli_learns_and_writes_checkpoints(split_folder, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"description": "test", "arch": "tiny_fer", "augment": NO_FLIP, "lr": 0.05,
                                  "batch_size": 14, "warmup_epochs": 0.5}))
    code = main(["train", "--recipe", str(recipe), "--data", str(split_folder), "--out", str(out), "--epochs", "8",
                 "--threads", "1"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert max(r["val_accuracy"] for r in rows) > 0.3  # chance is 1/7
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["command"].startswith("fer-edge train --recipe")
    assert (out / "last.pt").is_file() and not list(out.glob("*.tmp"))


def test_resume_after_a_kill_matches_an_uninterrupted_run(split_folder, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(split_folder, straight), log=lambda *_: None)

    def killed_after_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/3"):  # logged after the epoch's checkpoint is on disk
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(split_folder, resumed), log=killed_after_epoch_2)
    assert torch.load(resumed / "last.pt", weights_only=False)["epoch"] == 2
    train(_cfg(split_folder, resumed), resume=True, log=lambda *_: None)

    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(resumed / "last.pt", weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    lines = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["val_accuracy"] for r in lines(straight)] == [r["val_accuracy"] for r in lines(resumed)]


def test_resume_without_a_checkpoint_is_a_clear_error(split_folder, tmp_path):
    from fer_edge.errors import InputError

    with pytest.raises(InputError, match="no checkpoint"):
        train(_cfg(split_folder, tmp_path / "none"), resume=True)


def test_recipes_load_and_unknown_options_are_refused(tmp_path):
    assert "tiny-cpu" in list_recipes()
    cfg = load_recipe("tiny-cpu")
    assert cfg.arch == "tiny_fer" and cfg.epochs > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": "tiny_fer", "epochz": 3}))
    from fer_edge.errors import InputError

    with pytest.raises(InputError, match="epochz"):
        load_recipe(str(bad))
    with pytest.raises(InputError, match="known recipes"):
        load_recipe("no-such-recipe")


def test_checkpoint_records_its_command_into_the_exported_bundle(split_folder, tmp_path):
    from fer_edge.bundle import Bundle
    from fer_edge.export import export_bundle

    out = tmp_path / "run"
    train(_cfg(split_folder, out, epochs=1), log=lambda *_: None, command="fer-edge train --test")
    bundle = export_bundle(out / "best.pt", tmp_path / "b", name="b", targets=("onnx",), precisions=("fp32",),
                           val=split_folder)
    assert Bundle.open(bundle).manifest.extra["commands"]["train"] == "fer-edge train --test"
