"""The CLI is a thin skin: each subcommand on the tiny bundle, and its exit codes."""

from __future__ import annotations

import json

import pytest

from fer_edge.cli import main
from fer_edge.demo import sample_faces


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"onnxruntime", "openvino"} <= set(data["backends"])
    assert data["auto_order"] and data["default_model"] == "tiny"


def test_predict_json(tiny_bundle, capsys):
    images = [str(p) for p in sample_faces()[:3]]
    assert main(["predict", *images, "--model", str(tiny_bundle), "--backend", "onnxruntime", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in out["predictions"]] == images
    assert out["model"]["backend"] == "onnxruntime"
    for p in out["predictions"]:
        assert sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-4)


def test_evaluate_all_backends_reports_agreement(tiny_bundle, faces_folder, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(faces_folder), "--split", "test",
                 "--backend", "onnxruntime", "--precision", "all", "--json", str(report)])
    assert code == 0
    text = capsys.readouterr().out
    assert "macro F1" in text and "confusion matrix" in text and "top-1 agreement onnxruntime int8 vs fp32" in text
    data = json.loads(report.read_text())
    runs = data["runs"]
    assert set(runs) == {"onnxruntime/fp32", "onnxruntime/int8"}
    fp32 = runs["onnxruntime/fp32"]
    assert fp32["n"] == 84 and sum(map(sum, fp32["confusion_matrix"])) == 84
    assert fp32["accuracy"] > 0.6
    assert set(fp32["per_class"]) == set(fp32["labels"])


def test_demo_runs_on_the_sample_faces(tiny_bundle, capsys):
    assert main(["demo", "--model", str(tiny_bundle), "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "ms/crop" in out and out.count(".jpg") == len(sample_faces()) == 21


def test_export_command_writes_a_bundle(tiny_checkpoint, faces_folder, tmp_path, capsys):
    out = tmp_path / "cli-bundle"
    # the synthetic tree has only a test/ split, so calibrate and gate on it explicitly
    code = main(["export", str(tiny_checkpoint), "--out", str(out), "--targets", "onnx", "--precision", "fp32",
                 "--val", str(faces_folder / "test")])
    assert code == 0, capsys.readouterr().err
    assert (out / "manifest.json").is_file()
    assert main(["predict", str(sample_faces()[0]), "--model", str(out)]) == 0


def test_bad_bundle_exits_3(tmp_path, capsys):
    assert main(["predict", str(sample_faces()[0]), "--model", str(tmp_path)]) == 3
    assert "manifest.json" in capsys.readouterr().err


def test_unusable_backend_exits_4(tiny_bundle, monkeypatch, capsys):
    from fer_edge.runtimes import Probe
    from fer_edge.runtimes.openvino import OpenVinoBackend

    monkeypatch.setattr(OpenVinoBackend, "probe", classmethod(lambda cls: Probe(False, "no openvino here")))
    assert main(["predict", str(sample_faces()[0]), "--model", str(tiny_bundle), "--backend", "openvino"]) == 4
    assert "fer-edge[openvino]" in capsys.readouterr().err


def test_unreadable_image_is_reported_with_its_path(tiny_bundle, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["predict", str(bad), "--model", str(tiny_bundle)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_evaluate_record_stores_figures_in_manifest_and_card(tiny_bundle, faces_folder, capsys):
    from fer_edge.bundle import Bundle

    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(faces_folder), "--split", "test",
                 "--backend", "all", "--precision", "all", "--record"])
    assert code == 0, capsys.readouterr().err
    m = Bundle.open(tiny_bundle).manifest  # hashes still verify after the card was rewritten
    rec = m.evaluation["synthetic/test"]
    assert rec["runs"]["onnxruntime/fp32"]["n"] == 84 and "evaluate" in rec["command"]
    assert "onnxruntime int8 vs fp32" in rec["agreement"]
    from fer_edge.evaluate import CROSS_CPU_TOLERANCE
    from fer_edge.runtimes import cpu_model

    assert rec["machine"]["cpu"] == cpu_model() and rec["tolerance_across_cpus"] == CROSS_CPU_TOLERANCE
    # evaluated again (here: the same CPU), the figures are compared with the recorded ones
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(faces_folder), "--split", "test",
                 "--backend", "onnxruntime", "--precision", "all"]) == 0
    out = capsys.readouterr().out
    assert f"recorded figures (taken on {cpu_model()}" in out and "all within tolerance" in out
    card = (tiny_bundle / "MODEL_CARD.md").read_text()
    assert "### synthetic/test" in card and f"{rec['runs']['onnxruntime/fp32']['accuracy']:.2%}" in card


def test_tta_on_predict_evaluate_and_profile(tiny_bundle, faces_folder, capsys):
    from fer_edge.bundle import Bundle

    code = main(["evaluate", "--model", str(tiny_bundle), "--data", str(faces_folder), "--split", "test",
                 "--backend", "onnxruntime", "--precision", "fp32", "--tta", "flip", "--record"])
    assert code == 0, capsys.readouterr().err
    assert "tta flip   ECE (15 bins)" in capsys.readouterr().out
    m = Bundle.open(tiny_bundle).manifest
    run = m.evaluation["synthetic/test/tta=flip"]["runs"]["onnxruntime/fp32"]
    flip_t = m.temperature["by_tta"]["flip"]["value"]  # the mode's own temperature
    assert run["tta"] == "flip" and run["temperature"] == flip_t and 0 <= run["ece"] <= 1
    assert "### synthetic/test/tta=flip" in (tiny_bundle / "MODEL_CARD.md").read_text()
    image = next((faces_folder / "test").rglob("*.png"))
    assert main(["predict", str(image), "--model", str(tiny_bundle), "--tta", "ten_crop", "--json"]) == 0
    assert '"tta": "ten_crop"' in capsys.readouterr().out
    assert main(["profile", str(tiny_bundle), "--backends", "onnxruntime", "--precision", "fp32", "--batch", "1",
                 "--threads", "1", "--runs", "3", "--warmup", "0", "--no-detection", "--tta", "flip"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
