"""Profiler: structure and sanity of its rows (never speeds), the tegrastats parser, the CLI."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from fer_edge.errors import InputError
from fer_edge.profile import (
    ProfileConfig,
    Tegrastats,
    format_table,
    parse_tegrastats,
    percentiles,
    profile,
)

# Captured from devices (public logs): JetPack 5 on an AGX Orin, which has no single input rail,
# and JetPack 4.6.1 on a Nano, whose rails print without units.
ORIN_AGX = ("RAM 9562/30536MB (lfb 424x4MB) SWAP 126/31390MB (cached 0MB) CPU [90%@2201,100%@2201,100%@2201,"
            "100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201] "
            "EMC_FREQ 1%@2133 GR3D_FREQ 14%@[407,407] VIC_FREQ 115 NVDLA0_FREQ @1600 APE 174 CV0@73.625C "
            "CPU@77.281C Tboard@62C SOC2@70C Tdiode@62.25C SOC0@69.531C CV1@72.5C GPU@69.125C tj@77.281C "
            "SOC1@68.968C CV2@67.25C VDD_GPU_SOC 3150mW/2971mW VDD_CPU_CV 14312mW/12415mW VIN_SYS_5V0 4968mW/5048mW "
            "VDDQ_VDD2_1V8AO 1091mW/1091mW")
NANO_JP461 = ("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) "
              "CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C "
              "PMIC@50C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406")
ORIN_NX_STYLE = "RAM 2400/7620MB GR3D_FREQ 37%@[624] VDD_IN 6120mW/5980mW VDD_CPU_GPU_CV 1830mW/1700mW VDD_SOC 1520mW/1500mW"


def test_tegrastats_parser_on_captured_lines():
    orin = parse_tegrastats(ORIN_AGX)
    assert orin["rails"] == {"VDD_GPU_SOC": 3150, "VDD_CPU_CV": 14312, "VIN_SYS_5V0": 4968, "VDDQ_VDD2_1V8AO": 1091}
    assert orin["total_mw"] == 3150 + 14312 + 4968 + 1091  # no input rail: the sum of the rails
    assert (orin["ram_used_mb"], orin["ram_total_mb"], orin["gpu_load_pct"]) == (9562, 30536, 14)
    nano = parse_tegrastats(NANO_JP461)
    assert nano["rails"] == {"POM_5V_IN": 1750, "POM_5V_GPU": 0, "POM_5V_CPU": 366}
    assert nano["total_mw"] == 1750  # the module's input rail
    nx = parse_tegrastats(ORIN_NX_STYLE)
    assert nx["total_mw"] == 6120 and nx["gpu_load_pct"] == 37
    assert parse_tegrastats("not a tegrastats line") == {"rails": {}, "total_mw": None}


def test_tegrastats_reader_averages_a_window(tmp_path, monkeypatch):
    fake = tmp_path / "tegrastats"
    fake.write_text("#!/bin/sh\nwhile true; do echo 'RAM 1/2MB VDD_IN 5000mW/5000mW VDD_SOC 1000mW/1000mW'; "
                    "sleep 0.02; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    reader = Tegrastats(interval_ms=20)
    try:
        deadline = t0 + 10
        while len(reader.samples) < 3 and time.perf_counter() < deadline:
            time.sleep(0.05)
        window = reader.mean_power(t0, time.perf_counter())
    finally:
        reader.close()
    assert window is not None and window["samples"] >= 3
    assert window["total_mw"] == 5000 and window["rails_mw"] == {"VDD_IN": 5000, "VDD_SOC": 1000}


def test_percentiles_are_ordered():
    p = percentiles([5.0, 1.0, 2.0, 3.0, 100.0])
    assert p["p50"] == 3.0 and p["p50"] <= p["p95"] <= p["p99"] <= 100.0
    with pytest.raises(InputError):
        percentiles([])


def test_profile_rows_have_every_field_and_sane_values():
    result = profile(None, ProfileConfig(backends="all", batches=(1, 3), threads=(1,), runs=3, warmup=1))
    rows = [r for r in result["rows"] if r["stage"] == "recognize"]
    combos = {(r["backend"], r["precision"]) for r in rows}
    assert ("onnxruntime", "fp32") in combos and ("onnxruntime", "int8") in combos
    for r in rows:
        assert r["backend"] == r["requested"]["backend"] and r["precision"] == r["requested"]["precision"]
        assert r["head"] and r["threads"] == 1 and r["batch"] in (1, 3)
        for stage in ("preprocess", "backbone", "head", "total"):
            p = r["ms_per_call"][stage]
            assert 0 < p["p50"] <= p["p95"] <= p["p99"]
        assert r["ms_per_crop"]["p50"] == pytest.approx(r["ms_per_call"]["total"]["p50"] / r["batch"])
        assert r["crops_per_s"] == pytest.approx(r["batch"] * 1000 / r["ms_per_call"]["total"]["p50"])
        assert r["peak_rss_mib"] > 10 and r["python_peak_kib"] > 0
        # the table's memory column is the row's own (what its Recognizer added), not the process peak
        assert 0 <= r["rss_added_mib"] < r["rss_mib"] <= r["peak_rss_mib"] + 1
    frame_rows = [r for r in result["rows"] if r["stage"] == "frame"]
    usable = [n for n, (ok, _) in __import__("fer_edge.detect", fromlist=["x"]).available_detectors().items() if ok]
    assert sorted(r["backend"] for r in frame_rows) == sorted(usable)  # one frame-path row per usable detector
    for r in frame_rows:
        m = r["ms_per_call"]
        assert r["frames_per_s"] > 0 and r["threads"] == r["detector"]["threads"]
        assert m["detect"]["p50"] > 0 and m["crop"]["p50"] >= 0 and m["classify"]["p50"] >= 0
        assert m["total"]["p50"] >= m["detect"]["p50"] - 1e-9  # the whole frame path holds its stages
    table = format_table(result)
    assert "onnxruntime" in table and "+RSS MiB" in table
    json.dumps(result)  # everything in it is JSON-serialisable


def test_profile_rejects_what_it_cannot_run():
    with pytest.raises(InputError, match="backends"):
        profile(None, ProfileConfig(backends=("tensorflow",), runs=3))
    with pytest.raises(InputError, match="batches"):
        ProfileConfig(batches=(0,))


def test_cli_profile_writes_json_and_plot(tmp_path, capsys):
    from fer_edge.cli import main

    out, svg = tmp_path / "profile.json", tmp_path / "profile.svg"
    assert main(["profile", "--backends", "onnxruntime", "--precision", "fp32", "--batch", "1", "--threads", "1",
                 "--runs", "3", "--warmup", "1", "--no-detection", "--json", str(out), "--plot", str(svg)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed and "p95" in printed
    data = json.loads(out.read_text())
    assert data["command"].startswith("fer-edge profile --backends onnxruntime")
    assert [(r["backend"], r["precision"], r["batch"]) for r in data["rows"]] == [("onnxruntime", "fp32", 1)]
    assert "<svg" in svg.read_text()[:400]


def test_plot_without_matplotlib_writes_svg_or_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from fer_edge.errors import RuntimeUnavailableError
    from fer_edge.profile import plot

    result = {"model": "m", "rows": [
        {"backend": "onnxruntime", "precision": p, "head": "in_graph", "batch": 1, "threads": 1,
         "ms_per_crop": {"p50": v}} for p, v in (("fp32", 1.5), ("int8", 0.75))]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    svg = plot(result, tmp_path / "p.svg")
    text = open(svg).read()
    assert text.startswith("<svg") and text.count("<rect") == 2 and "onnxruntime int8 in_graph b1 t1" in text
    with pytest.raises(RuntimeUnavailableError, match="matplotlib"):
        plot(result, tmp_path / "p.png")


# --- models side by side (`fer-edge profile --models`) -------------------------------------------------


def test_cli_profile_models_prints_ms_per_crop_beside_recorded_accuracy(tmp_path, capsys):
    from fer_edge.bundle import Bundle
    from fer_edge.cli import main

    out = tmp_path / "models.json"
    assert main(["profile", "--models", "tiny,nano", "--backends", "onnxruntime", "--threads", "1", "--runs", "3",
                 "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [(r["model"], r["backend"], r["threads"]) for r in data["rows"]] == [("tiny", "onnxruntime", 1),
                                                                               ("nano", "onnxruntime", 1)]
    for r in data["rows"]:
        runs = Bundle.open(r["model"]).manifest.evaluation["fer2013/test"]["runs"]
        assert r["recorded"] == {"split": "fer2013 test", **{k: runs[f"onnxruntime/{r['precision']}"][k]
                                                             for k in ("accuracy", "macro_f1")}}
        assert 0 < r["ms_per_crop"]["p50"] <= r["ms_per_crop"]["p95"]
        assert f"{r['recorded']['accuracy'] * 100:7.2f}%" in printed
    assert data["machine"]["cpu_class"] in printed and data["command"].startswith("fer-edge profile --models")


def test_profile_models_falls_back_to_val_figures_and_refuses_what_it_cannot_compare(tmp_path):
    import shutil

    from fer_edge.bundle import PACKAGED_DIR, Bundle
    from fer_edge.cli import main
    from fer_edge.profile import compare_models, recorded_accuracy

    m = Bundle.open(shutil.copytree(PACKAGED_DIR / "nano", tmp_path / "nano")).manifest
    del m.evaluation["fer2013/test"]
    assert recorded_accuracy(m, "openvino", "int8") == {"split": "val", **{
        k: m.evaluation["val"]["openvino/int8"][k] for k in ("accuracy", "macro_f1")}}
    assert recorded_accuracy(m, "openvino", "fp16") is None
    with pytest.raises(InputError, match="at least one model"):
        compare_models(())
    with pytest.raises(InputError, match="runs must be"):
        compare_models(("nano",), runs=1)
    assert main(["profile", "--models", "nano", "--backends", "all"]) == 1  # InputError: one pair per model
