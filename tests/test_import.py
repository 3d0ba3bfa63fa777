"""Import hygiene: `import fer_edge` stays light, and the subpackages install under fer_edge only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "onnxruntime", "openvino", "PIL", "cv2", "tensorrt", "sklearn")
REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter away from the repo root; it prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_fer_edge_is_light(tmp_path):
    code = (
        "import fer_edge, sys, json\n"
        "print(json.dumps({'heavy': sorted(m for m in %r if m in sys.modules), "
        "'file': fer_edge.__file__, 'version': fer_edge.__version__, "
        "'path0': sys.path[0], 'emotions': list(fer_edge.EMOTIONS)}))" % (HEAVY,)
    )
    out = run_python(code, tmp_path)
    assert out["heavy"] == [], f"import fer_edge pulled in {out['heavy']}"
    assert Path(out["file"]).resolve() == REPO / "fer_edge" / "__init__.py"
    assert out["version"] and out["emotions"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_core_modules_stay_light(tmp_path):
    # Opening a bundle, preprocessing and choosing a backend must not need OpenCV, Pillow or a runtime.
    code = (
        "import sys, json\n"
        "import fer_edge.bundle, fer_edge.manifest, fer_edge.preprocess, fer_edge.metrics, fer_edge.formats\n"
        "import fer_edge.runtimes\n"
        "print(json.dumps({'heavy': sorted(m for m in %r if m in sys.modules)}))" % (HEAVY,)
    )
    assert run_python(code, tmp_path)["heavy"] == []


def test_subpackages_live_under_fer_edge_only(tmp_path):
    code = (
        "import importlib, importlib.util, json, os, sys\n"
        "exp = importlib.import_module('fer_edge.export')\n"
        "rt = importlib.import_module('fer_edge.runtimes')\n"
        "print(json.dumps({'export': exp.__file__, 'runtimes': rt.__file__, 'rt_pkg': rt.__package__,\n"
        "  'has_select': hasattr(rt, 'select_backend'),\n"
        "  'top_export': importlib.util.find_spec('export') is not None,\n"
        "  'top_runtimes': importlib.util.find_spec('runtimes') is not None,\n"
        "  'package_path': [os.path.abspath(p) for p in sys.modules['fer_edge'].__path__],\n"
        "  'repo_folders': [n for n in ('tests', 'benchmarks', 'docs', 'tools')\n"
        "                   if importlib.util.find_spec('fer_edge.' + n) is not None],\n"
        "  'repo_on_path': any(os.path.abspath(p or '.') == %r for p in sys.path)}))" % (str(REPO),)
    )
    out = run_python(code, tmp_path)
    assert not out["repo_on_path"], "the repo root leaked onto sys.path; the check below would be meaningless"
    assert Path(out["export"]).resolve() == REPO / "export" / "__init__.py"
    assert Path(out["runtimes"]).resolve() == REPO / "runtimes" / "__init__.py"
    assert out["rt_pkg"] == "fer_edge.runtimes" and out["has_select"]
    assert not out["top_export"], "a top-level module named 'export' is importable"
    assert not out["top_runtimes"], "a top-level module named 'runtimes' is importable"
    # packaging maps export/ and runtimes/; the package's own path is its folder alone
    assert out["package_path"] == [str(REPO / "fer_edge")] and out["repo_folders"] == []


def test_in_process_subpackage_identity():
    import fer_edge.export
    import fer_edge.runtimes
    from fer_edge.runtimes import BACKENDS

    assert fer_edge.runtimes.__name__ == "fer_edge.runtimes"
    assert {"onnxruntime", "openvino"} <= set(BACKENDS)


@pytest.mark.parametrize("name", ["Recognizer", "Prediction", "Bundle", "Manifest", "InputSpec", "packaged_models"])
def test_lazy_names_resolve(name):
    import fer_edge

    assert name in fer_edge.__all__
    assert getattr(fer_edge, name) is not None
