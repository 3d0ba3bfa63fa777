"""Backend selection: auto ranking, honest probes, explicit/strict never falling back, fastest + its cache.

Runs on a copy of the packaged `tiny` bundle (ONNX + OpenVINO, FP32 + INT8; no torch needed). Fake
backends registered here wrap a real ONNX Runtime session, so what they return is real."""

from __future__ import annotations

import json
import logging
import shutil
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import fer_edge
from fer_edge import InputError, RuntimeUnavailableError
from fer_edge.bundle import PACKAGED_DIR, Bundle, write_manifest
from fer_edge.manifest import Artifact
from fer_edge.runtimes import BACKENDS, Backend, Probe, auto_order, cuda_probe, select_backend
from fer_edge.runtimes.onnxruntime import OnnxRuntimeBackend
from fer_edge.runtimes.selection_cache import cache_path
from fer_edge.runtimes.tensorrt import TensorRTBackend

from conftest import pin_timings, pin_vendor  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    return Path(shutil.copytree(PACKAGED_DIR / "tiny", tmp_path / "tiny"))


def fake_backend(name: str, *, rank: int = -1, usable: bool = True, load_error: Exception | None = None,
                 delay: float = 0.0) -> type[Backend]:
    """A backend that imports fine; its probe, load and speed are what the test says."""

    class Fake(Backend):
        format = "onnx"
        extra = f"{name}-extra"
        module = name
        loads = 0

        @classmethod
        def probe(cls) -> Probe:
            return Probe(usable, f"{name}: probe says {'usable' if usable else 'no device here'}", "1.0",
                         ("cpu",) if usable else ())

        @classmethod
        def preference(cls) -> tuple[int, str]:
            return rank, f"{name} ranked {rank} by the test"

        def __init__(self, path, *, input_name, output_names, threads=None, device=None):
            type(self).loads += 1
            if load_error is not None:
                raise load_error
            self.inner = OnnxRuntimeBackend(path, input_name=input_name, output_names=output_names, threads=1)

        def run(self, batch):
            time.sleep(delay)
            return self.inner.run(batch)

        def describe(self):
            return {"backend": name, "device": "cpu"}

    Fake.name = name
    return Fake


@pytest.fixture
def register(monkeypatch):
    def add(*classes: type[Backend], only: bool = False) -> None:
        if only:  # leave just these: the real backends would win any race against a sleeping fake
            for real in list(BACKENDS):
                monkeypatch.delitem(BACKENDS, real)
        for cls in classes:
            monkeypatch.setitem(BACKENDS, cls.name, cls)

    return add


def test_auto_order_is_gpu_then_openvino_on_intel_then_onnxruntime(monkeypatch):
    order, why = auto_order()
    assert order[0] == "tensorrt" and "CUDA" in why
    pin_vendor(monkeypatch, "GenuineIntel")
    assert auto_order()[0][1:] == ["openvino", "onnxruntime", "ncnn"]
    pin_vendor(monkeypatch, "AuthenticAMD")
    assert auto_order()[0][1:] == ["onnxruntime", "openvino", "ncnn"]  # ncnn last: auto times it anyway


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_auto_skips_a_backend_that_imports_and_probes_usable_but_cannot_load(bundle_dir, register, caplog,
                                                                             monkeypatch, vendor):
    pin_vendor(monkeypatch, vendor)
    pin_timings(monkeypatch, {"openvino/int8": 0.3, "onnxruntime/int8": 0.2, "broken/int8": 0.1})
    broken = fake_backend("broken", load_error=RuntimeError("simulated: provider failed to initialise"))
    register(broken)
    with caplog.at_level(logging.INFO, logger="fer_edge"):
        rec = fer_edge.Recognizer(bundle_dir)
    d = rec.describe()
    assert broken.loads == 2 and (rec.backend, rec.precision) == ("onnxruntime", "int8")  # each pair, any vendor
    assert d["skipped"]["broken/int8"] == "failed: RuntimeError: simulated: provider failed to initialise"
    assert d["reason"].startswith("auto: onnxruntime/int8 at 0.200 ms") and d["decision"]["cache"] == "miss"
    assert any(rec.backend in r.getMessage() and "auto" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_auto_in_fixed_order_skips_what_cannot_load(bundle_dir, register, monkeypatch, vendor):
    pin_vendor(monkeypatch, vendor)
    monkeypatch.setenv("FER_EDGE_AUTO", "order")
    broken = fake_backend("broken", load_error=RuntimeError("simulated: provider failed to initialise"))
    register(broken)
    rec = fer_edge.Recognizer(bundle_dir)
    d = rec.describe()
    assert broken.loads == 1 and rec.backend == auto_order()[0][2]  # broken, tensorrt... then the first CPU one
    assert d["skipped"]["broken"] == "failed to load: RuntimeError: simulated: provider failed to initialise"
    assert d["reason"].startswith("auto: first usable of ['broken', 'tensorrt'")
    assert d["decision"]["method"] == "fixed order" and "FER_EDGE_AUTO=order" in d["reason"]


def test_auto_measures_every_pair_once_per_bundle_and_machine(bundle_dir, monkeypatch):
    pin_timings(monkeypatch, {"openvino/fp32": 0.1, "openvino/int8": 0.3, "onnxruntime/fp32": 0.05,
                              "onnxruntime/int8": 0.2})
    d = fer_edge.Recognizer(bundle_dir).describe()
    usable = ["onnxruntime"] + (["openvino"] if BACKENDS["openvino"].probe().usable else [])
    # FP32 is timed too: INT8 is not faster on every CPU, and here it is 4x slower
    assert (d["backend"], d["precision"], d["cache"]) == ("onnxruntime", "fp32", "miss")
    assert sorted(d["timings_ms"]) == d["decision"]["timed"] == sorted(f"{b}/{p}" for b in usable
                                                                       for p in ("fp32", "int8"))
    assert d["decision"]["input"] == "golden crop" and d["decision"]["runs"] == 10 and d["decision"]["seconds"] >= 0
    assert d["decision"]["val_accuracy"]["onnxruntime/int8"] > 0.5 and "the fastest of" in d["reason"]
    pin_timings(monkeypatch, {})  # a cache hit does not time again: the emptied table would change the answer
    again = fer_edge.Recognizer(bundle_dir).describe()
    assert (again["backend"], again["precision"], again["cache"]) == ("onnxruntime", "fp32", "hit")
    assert "already timed" in again["decision"]["why"]
    pin_timings(monkeypatch, {"openvino/fp32": 0.1, "openvino/int8": 0.3, "onnxruntime/fp32": 0.05,
                              "onnxruntime/int8": 0.2})
    fastest = fer_edge.Recognizer(bundle_dir, "fastest").describe()  # its own entry, every pair
    assert (fastest["backend"], fastest["precision"], fastest["cache"]) == ("onnxruntime", "fp32", "miss")
    assert len(fastest["timings_ms"]) == 2 * len(usable)


def _val(bundle_dir, **acc) -> None:
    m = json.loads((bundle_dir / "manifest.json").read_text())
    for key, value in acc.items():
        m["evaluation"]["val"][key.replace("_", "/")]["accuracy"] = value
    (bundle_dir / "manifest.json").write_text(json.dumps(m))


def test_auto_serves_the_more_accurate_of_pairs_within_the_timing_noise(bundle_dir, monkeypatch):
    # 2 % apart is under the 3 % floor: the same speed, so val accuracy decides
    _val(bundle_dir, onnx_fp32=0.60, onnx_int8=0.62, openvino_fp32=0.60, openvino_int8=0.55)
    pin_timings(monkeypatch, {"onnxruntime/fp32": 1.00, "onnxruntime/int8": 1.02, "openvino/fp32": 1.5,
                              "openvino/int8": 1.01})
    d = fer_edge.Recognizer(bundle_dir).describe()
    assert (d["backend"], d["precision"]) == ("onnxruntime", "int8")
    assert "within the timing noise (0.030 ms) of the fastest, onnxruntime/fp32" in d["reason"]
    assert "(62.00 vs 60.00 %)" in d["reason"]
    # `fastest` keeps the strictly fastest pair whatever its accuracy
    f = fer_edge.Recognizer(bundle_dir, "fastest").describe()
    assert (f["backend"], f["precision"]) == ("onnxruntime", "fp32")


def test_auto_keeps_the_fastest_when_the_other_pair_is_slower_than_the_noise(bundle_dir, monkeypatch):
    _val(bundle_dir, onnx_fp32=0.60, onnx_int8=0.70)
    pin_timings(monkeypatch, {"onnxruntime/fp32": 1.00, "onnxruntime/int8": 1.20})  # 20 %: past the 10 % cap
    d = fer_edge.Recognizer(bundle_dir).describe()
    assert (d["backend"], d["precision"]) == ("onnxruntime", "fp32") and "the fastest of" in d["reason"]


def test_the_noise_comes_from_the_runs_spread_between_a_floor_and_a_cap():
    from fer_edge.runtimes.selection import Timing, choose, noise_ms

    acc = {"a/fp32": 0.60, "a/int8": 0.65, "b/int8": None}
    quiet = {"a/fp32": Timing(1.00, 0.01), "a/int8": Timing(1.05, 0.01)}
    assert noise_ms(*quiet.values()) == pytest.approx(0.03)  # spread 1 % < floor 3 %: 5 % apart is real
    assert choose(quiet, acc, prefer_accurate=True)[0] == "a/fp32"
    noisy = {"a/fp32": Timing(1.00, 0.06), "a/int8": Timing(1.05, 0.01)}
    assert choose(noisy, acc, prefer_accurate=True)[0] == "a/int8"  # runs spread 6 %: 5 % apart is noise
    wild = {"a/fp32": Timing(1.00, 0.50), "a/int8": Timing(1.11, 0.50)}
    assert noise_ms(*wild.values()) == pytest.approx(0.10)  # capped: never more than 10 % slower
    assert choose(wild, acc, prefer_accurate=True)[0] == "a/fp32"
    assert choose(noisy, acc, prefer_accurate=False)[0] == "a/fp32"
    # a pair with no val figure neither displaces the fastest nor is displaced by it
    assert choose({"a/fp32": Timing(1.0, 0.0), "b/int8": Timing(1.01, 0.0)}, acc, prefer_accurate=True)[0] == "a/fp32"
    assert choose({"b/int8": Timing(1.0, 0.0), "a/int8": Timing(1.01, 0.0)}, acc, prefer_accurate=True)[0] == "b/int8"


def test_auto_never_times_an_int8_that_failed_the_gate_and_re_decides_old_cached_choices(bundle_dir, monkeypatch):
    from fer_edge.runtimes import selection, selection_cache

    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["evaluation"]["accuracy_gate"]["failed_artifacts"] = ["onnx/int8"]
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    bundle = Bundle.open(bundle_dir)
    # an entry written under the old rule (no `rule` in the key) names a pair the new rule would not serve
    machine = selection_cache.fingerprint(selection.probe_all(), threads=None, device=None, precision="auto")
    machine["strategy"] = "auto"
    selection_cache.store(selection_cache.cache_key(selection_cache.manifest_sha256(bundle), machine),
                          {"backend": "onnxruntime", "precision": "int8", "timings_ms": {"onnxruntime/int8": 0.1}})
    pin_timings(monkeypatch, {"onnxruntime/fp32": 1.0, "onnxruntime/int8": 0.1})
    d = fer_edge.Recognizer(bundle_dir).describe()
    assert d["cache"] == "miss" and "onnxruntime/int8" not in d["timings_ms"] and "onnxruntime/fp32" in d["timings_ms"]
    assert (d["backend"], d["precision"]) != ("onnxruntime", "int8")


def test_auto_mode_must_be_measure_or_order(bundle_dir, monkeypatch):
    monkeypatch.setenv("FER_EDGE_AUTO", "guess")
    with pytest.raises(InputError, match="FER_EDGE_AUTO must be 'measure' or 'order'"):
        fer_edge.Recognizer(bundle_dir)


def test_explicit_or_strict_never_falls_back(bundle_dir, register):
    broken = fake_backend("broken", load_error=RuntimeError("simulated: provider failed to initialise"))
    register(broken)
    with pytest.raises(RuntimeUnavailableError, match="'broken' failed to load: RuntimeError: simulated"):
        fer_edge.Recognizer(bundle_dir, "broken")
    with pytest.raises(RuntimeUnavailableError, match="strict: broken.*not falling back.*simulated"):
        fer_edge.Recognizer(bundle_dir, strict=True)
    with pytest.raises(RuntimeUnavailableError, match="strict: broken/fp32 is usable here but failed"):
        fer_edge.Recognizer(bundle_dir, "fastest", strict=True)


def test_a_backend_whose_probe_says_unusable_is_never_loaded(bundle_dir, register):
    absent = fake_backend("absent", usable=False)
    register(absent)
    rec = fer_edge.Recognizer(bundle_dir)
    assert rec.describe()["skipped"]["absent"] == "absent: probe says no device here" and absent.loads == 0
    with pytest.raises(RuntimeUnavailableError, match=r"no device here.*fer-edge\[absent-extra\]"):
        fer_edge.Recognizer(bundle_dir, "absent")
    assert absent.loads == 0


def test_strict_auto_still_skips_what_is_not_usable_here(bundle_dir, register):
    register(fake_backend("absent", usable=False))
    rec = fer_edge.Recognizer(bundle_dir, strict=True)  # not usable is not a fallback: nothing was tried
    assert rec.backend in ("onnxruntime", "openvino") and "absent" in rec.describe()["skipped"]


def test_nothing_usable_lists_every_reason_and_the_extras(bundle_dir, register):
    register(fake_backend("absent", usable=False), only=True)
    with pytest.raises(RuntimeUnavailableError, match=r"absent: absent: probe says no device here.*fer-edge\[absent-extra\]"):
        fer_edge.Recognizer(bundle_dir)


# --- TensorRT: an importable module is not a usable device ---------------------------------------------


def test_tensorrt_that_imports_without_a_cuda_device_is_refused(bundle_dir, monkeypatch):
    lean = types.SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr(cuda_probe, "import_tensorrt", lambda builder=False: (lean, "tensorrt_lean"))
    monkeypatch.setattr(cuda_probe, "cuda_status", lambda: ([], "cuInit failed with CUDA error 100"))
    probe = TensorRTBackend.probe()
    assert not probe.usable and "tensorrt_lean 10.3.0 importable but no CUDA device" in probe.reason
    with pytest.raises(RuntimeUnavailableError, match="importable but no CUDA device: cuInit failed"):
        fer_edge.Recognizer(bundle_dir, "tensorrt")
    assert "cuInit failed" in fer_edge.Recognizer(bundle_dir).describe()["skipped"]["tensorrt"]


def test_tensorrt_probe_is_honest_on_this_machine(bundle_dir):
    probe = TensorRTBackend.probe()
    if probe.usable:
        pytest.skip(f"TensorRT is usable here ({probe.reason}); the refusal is covered by the simulated test")
    with pytest.raises(RuntimeUnavailableError, match="not usable here"):
        fer_edge.Recognizer(bundle_dir, "tensorrt")
    assert fer_edge.Recognizer(bundle_dir).describe()["skipped"]["tensorrt"] == probe.reason


def test_tensorrt_engine_is_looked_up_for_this_gpu_and_version(bundle_dir, monkeypatch):
    import fer_edge.runtimes.tensorrt as trt_backend

    engine = bundle_dir / "backbone/tensorrt/sm_87-trt10.3.0/model.fp16.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"an engine for a Jetson Orin")
    b = Bundle.open(bundle_dir)
    b.manifest.artifacts.append(Artifact("tensorrt", "fp16", engine.relative_to(bundle_dir).as_posix()))
    write_manifest(bundle_dir, b.manifest)
    b = Bundle.open(bundle_dir)
    orin = cuda_probe.CudaDevice(0, "Orin", (8, 7))
    monkeypatch.setattr(trt_backend, "target_key", lambda device: (orin, "sm_87-trt10.3.0"))
    assert TensorRTBackend.artifact_path(b, "fp16", None) == engine
    assert TensorRTBackend.precisions(b) == ("fp16", "fp32")  # fp32 can be built from the ONNX
    with pytest.raises(RuntimeUnavailableError, match="no TensorRT int8 engine for sm_87-trt10.3.0.*build-engine"):
        TensorRTBackend.artifact_path(b, "int8", None)
    h100 = cuda_probe.CudaDevice(0, "H100", (9, 0))
    monkeypatch.setattr(trt_backend, "target_key", lambda device: (h100, "sm_90-trt10.3.0"))
    if cuda_probe.probe_tensorrt(builder=True).usable:
        pytest.skip("a real TensorRT builder is here: building is covered by the tensorrt-marked test")
    with pytest.raises(RuntimeUnavailableError, match="cannot build TensorRT engines on this machine"):
        TensorRTBackend.artifact_path(b, "fp16", None)  # no engine for this GPU: build it ... where possible


@pytest.mark.tensorrt
def test_tensorrt_builds_on_first_use_caches_and_matches_onnxruntime(bundle_dir, tmp_path):
    if not cuda_probe.probe_tensorrt(builder=True).usable:
        pytest.skip(f"needs TensorRT with its builder and a CUDA device: {cuda_probe.probe_tensorrt(builder=True).reason}")
    x = np.load(bundle_dir / "golden" / "input.npy")
    rec = fer_edge.Recognizer(bundle_dir, "tensorrt", precision="fp32")
    assert Path(rec.describe()["artifact"]).is_relative_to(tmp_path / "cache" / "tensorrt")
    ref = fer_edge.Recognizer(bundle_dir, "onnxruntime", precision="fp32")._run(x)
    np.testing.assert_allclose(rec._run(x)["logits"], ref["logits"], atol=1e-3)


# --- device requests ------------------------------------------------------------------------------------


def test_onnxruntime_refuses_a_gpu_provider_it_does_not_have_or_cannot_start(bundle_dir, monkeypatch):
    import onnxruntime as ort

    real = ort.get_available_providers()
    if "CUDAExecutionProvider" in real:
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(RuntimeUnavailableError, match="has no CUDAExecutionProvider.*onnxruntime-gpu"):
        fer_edge.Recognizer(bundle_dir, "onnxruntime", device="cuda")
    # Listed is not proof: with the provider "listed", ORT quietly builds a CPU session; we refuse it.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with warnings.catch_warnings(), pytest.raises(RuntimeUnavailableError, match="could not start it on cuda:0"):
        warnings.simplefilter("ignore")  # ORT's own "not in available provider names" warning
        fer_edge.Recognizer(bundle_dir, "onnxruntime", device="cuda")
    with pytest.raises(InputError, match="onnxruntime device must be one of"):
        fer_edge.Recognizer(bundle_dir, "onnxruntime", device="gpu0")
    d = fer_edge.Recognizer(bundle_dir, "onnxruntime", device="cpu").describe()
    assert d["device"] == "cpu" and d["providers"] == ["CPUExecutionProvider"]


@pytest.mark.openvino
def test_openvino_devices_are_checked_and_described(bundle_dir):
    import openvino as ov

    core = ov.Core()
    if "NPU" not in core.available_devices:
        with pytest.raises(RuntimeUnavailableError, match=r"device 'NPU' not available; devices here: \['CPU'"):
            fer_edge.Recognizer(bundle_dir, "openvino", device="npu")
    d = fer_edge.Recognizer(bundle_dir, "openvino", device="AUTO").describe()
    assert d["device"] == "AUTO" and d["device_names"]
    real = next(iter(d["device_names"]))
    assert d["device_names"][real] == core.get_property(real, "FULL_DEVICE_NAME")


# --- fastest ----------------------------------------------------------------------------------------------


def test_fastest_times_each_pair_picks_the_fastest_and_caches_it(bundle_dir, register):
    fast, slow = fake_backend("fast", delay=0.002), fake_backend("slow", delay=0.008)
    register(slow, fast, only=True)
    rec = fer_edge.Recognizer(bundle_dir, "fastest", threads=1)
    d = rec.describe()
    assert rec.backend == "fast" and d["cache"] == "miss"
    assert set(d["timings_ms"]) == {"fast/fp32", "fast/int8", "slow/fp32", "slow/int8"}
    assert max(d["timings_ms"][f"fast/{p}"] for p in ("fp32", "int8")) < min(
        d["timings_ms"][f"slow/{p}"] for p in ("fp32", "int8"))
    assert d["timings_ms"][f"fast/{rec.precision}"] == min(d["timings_ms"].values())
    entries = json.loads(cache_path().read_text())["entries"]
    assert [(e["backend"], e["precision"]) for e in entries.values()] == [("fast", rec.precision)]
    assert rec.predict_proba(np.full((1, 48, 48), 128, np.uint8)).shape == (1, 7)  # the winner really runs

    loads = slow.loads
    again = fer_edge.Recognizer(bundle_dir, "fastest", threads=1)
    assert (again.backend, again.precision, again.describe()["cache"]) == ("fast", rec.precision, "hit")
    assert slow.loads == loads and "cached in" in again.describe()["reason"]  # nothing re-timed

    fresh = fer_edge.Recognizer(bundle_dir, "fastest", threads=1, refresh=True)
    assert fresh.describe()["cache"] == "refresh" and slow.loads == loads + 2

    assert fer_edge.Recognizer(bundle_dir, "fastest", threads=2).describe()["cache"] == "miss"  # another request


def test_fastest_cache_is_invalidated_when_the_bundle_changes(bundle_dir, register):
    register(fake_backend("fast", delay=0.001), only=True)
    assert fer_edge.Recognizer(bundle_dir, "fastest").describe()["cache"] == "miss"
    assert fer_edge.Recognizer(bundle_dir, "fastest").describe()["cache"] == "hit"
    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["description"] += " (re-exported)"
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    assert fer_edge.Recognizer(bundle_dir, "fastest").describe()["cache"] == "miss"


def test_fastest_skips_what_fails_and_survives_a_corrupt_cache(bundle_dir, register):
    register(fake_backend("fast", delay=0.001), fake_backend("broken", load_error=OSError("simulated")), only=True)
    cache_path().parent.mkdir(parents=True)
    cache_path().write_text("{not json")
    d = fer_edge.Recognizer(bundle_dir, "fastest").describe()
    assert d["backend"] == "fast" and d["skipped"]["broken/fp32"] == "failed: OSError: simulated"
    assert json.loads(cache_path().read_text())["entries"]  # rewritten


def test_fastest_on_the_real_backends_skips_int8_that_failed_the_gate(bundle_dir):
    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["evaluation"]["accuracy_gate"]["drops_pp"]["onnx/int8"] = 2.0
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    rec = fer_edge.Recognizer(bundle_dir, "fastest", threads=1)
    timings = rec.describe()["timings_ms"]
    assert "onnxruntime/fp32" in timings and "onnxruntime/int8" not in timings
    assert timings[f"{rec.backend}/{rec.precision}"] == min(timings.values())


def test_unknown_strategy_or_backend_names_the_choices(bundle_dir):
    with pytest.raises(InputError, match=r"unknown backend 'quickest'.*'auto', 'fastest'"):
        select_backend(Bundle.open(bundle_dir), "quickest")


def test_info_reports_devices_per_backend():
    from fer_edge.info import info

    data = info()
    assert "CPUExecutionProvider" in data["backends"]["onnxruntime"]["providers"]
    if data["backends"]["openvino"]["usable"]:
        assert "CPU" in data["backends"]["openvino"]["device_names"]
    trt = data["backends"]["tensorrt"]
    assert trt["usable"] == cuda_probe.probe_tensorrt().usable and trt["reason"]
    assert isinstance(data["cuda"]["devices"], list) and data["cuda"]["reason"]


def test_cli_predict_fastest_and_info(bundle_dir, capsys):
    from fer_edge.cli import main
    from fer_edge.demo import sample_faces

    image = str(sample_faces()[0])
    for cache in ("miss", "hit"):
        assert main(["predict", image, "--model", str(bundle_dir), "--backend", "fastest", "--threads", "1",
                     "--head", "in_graph", "--json"]) == 0
        model = json.loads(capsys.readouterr().out)["model"]
        assert model["cache"] == cache and model["head"]["kind"] == "in_graph" and "fastest" in model["reason"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():  # an explicit device never falls back
        assert main(["predict", image, "--model", str(bundle_dir), "--backend", "onnxruntime", "--device", "cuda"]) == 4
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "\ncuda: " in out and "providers: [" in out and "tensorrt" in out


def test_one_device_vocabulary_for_every_backend_and_build_engine(bundle_dir, capsys):
    from fer_edge.cli import main
    from fer_edge.runtimes.devices import Device, parse_device
    from fer_edge.runtimes.openvino import openvino_device
    from fer_edge.runtimes.tensorrt import gpu_index

    assert parse_device(None) is None  # the one default: each backend applies the same rule
    assert parse_device("CUDA:1")[:2] == ("cuda", 1) and parse_device(2) == Device("cuda", 2, "cuda:2")
    assert parse_device("gpu")[:2] == ("gpu", None) and parse_device("cpu")[:2] == ("cpu", None)
    with pytest.raises(InputError, match="device index"):
        parse_device("cuda:first")
    # the same words mean the same device to each backend
    assert [gpu_index(d) for d in (None, 1, "cuda:2", "GPU:3")] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="CUDA GPUs only"):
        gpu_index("cpu")
    assert [openvino_device(d) for d in (None, "cpu", "CPU", "gpu", "gpu:1", "npu", "AUTO")] == [
        "CPU", "CPU", "CPU", "GPU", "GPU.1", "NPU", "AUTO"]
    with pytest.raises(RuntimeUnavailableError, match="openvino has no CUDA device"):
        openvino_device("cuda")
    assert fer_edge.Recognizer(bundle_dir, "onnxruntime", device="CPU").describe()["device"] == "cpu"
    if BACKENDS["openvino"].probe().usable:
        assert fer_edge.Recognizer(bundle_dir, "openvino", device="cpu").describe()["device"] == "CPU"
    # build-engine takes the same strings (an index alone still means that CUDA GPU)
    assert main(["build-engine", str(bundle_dir), "--device", "cpu"]) == 1
    assert "CUDA GPUs only" in capsys.readouterr().err


def test_an_unwritable_cache_costs_a_re_timing_not_the_recognizer(bundle_dir, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("FER_EDGE_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="fer_edge"):
        d = fer_edge.Recognizer(bundle_dir).describe()
    assert d["decision"]["method"] == "measured" and d["cache"] == "miss"
    assert any("cannot write the selection cache" in r.getMessage() for r in caplog.records)


def test_timing_a_slow_backend_stops_at_its_budget():
    from fer_edge.runtimes.selection import time_backend

    class Slow:
        calls = 0

        def run(self, x):
            Slow.calls += 1
            time.sleep(0.03)

    time_backend(Slow(), np.zeros(1), warmup=2, runs=10, budget_s=0.05)
    assert Slow.calls <= 1 + 3  # one warm-up (half the budget spent), then the 3-call minimum
