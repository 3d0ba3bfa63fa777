"""The layer rule of docs/architecture.md, enforced: every import in every module (lazy ones
inside functions included, since a lazy upward import is still a dependency) goes to the same or
a lower layer, and no modules import each other in a cycle. Reads the source with `ast`; imports
nothing it checks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folders and the package name each installs as.
PACKAGES = {"fer_edge": REPO / "fer_edge", "fer_edge.export": REPO / "export", "fer_edge.runtimes": REPO / "runtimes"}

# Lowest first; a module may import its own layer and the ones before it.
LAYERS = ("core", "runtimes", "api", "train", "export", "cli")
# Subpackages by prefix; fer_edge's own modules one by one, so a new one must be placed here.
SUBPACKAGES = {"fer_edge.runtimes": "runtimes", "fer_edge.train": "train", "fer_edge.export": "export"}
MODULES = {
    **dict.fromkeys(["errors", "_version", "labels", "types", "preprocess", "manifest", "formats", "metrics",
                     "probabilities", "data", "bundle", "jpeg_check", "calibration", "parity", "tta",
                     "jsonfile", "artifact_info", "bundle_check"], "core"),
    **dict.fromkeys(["fer_edge", "recognizer", "evaluate", "verify", "detect", "video", "profile", "demo", "info"],
                    "api"),
    "cli": "cli",
}
# Upward imports that stay for now, each with its reason. Keep this list short.
ALLOWED_UPWARD = {
    ("fer_edge.runtimes.tensorrt", "fer_edge.export.onnx2tensorrt"):
        "builds a TensorRT engine on first use when neither bundle nor cache has one (lazy; the export extra)",
}
# What core modules may import at module level besides the standard library and each other.
CORE_THIRD_PARTY = {"numpy"}


def module_files(packages: dict[str, Path] = PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__)."""
    mods = {}
    for pkg, folder in packages.items():
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mods[".".join([pkg, *(parts[:-1] if is_pkg else parts)])] = (f, is_pkg)
    return mods


def _targets(name: str, is_pkg: bool, node: ast.AST, known: set[str]) -> list[str]:
    """The dotted names an import statement loads: a submodule where `from X import y` names one."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = name if is_pkg else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        mod = base + ("." + node.module if node.module else "")
    else:
        mod = node.module or ""
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]


def import_graph(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source."""
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(name, is_pkg, node, known):
                    while target not in known and "." in target:  # fer_edge.x.Name -> fer_edge.x
                        target = target.rpartition(".")[0]
                    if target in known and target != name:
                        graph[name].add(target)
    return graph


def layer_of(module: str) -> str | None:
    for prefix, layer in SUBPACKAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return MODULES.get("fer_edge" if module == "fer_edge" else module.removeprefix("fer_edge."))


def upward_imports(graph: dict[str, set[str]], allowed=ALLOWED_UPWARD) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})"
            for src in sorted(graph) for dst in sorted(graph[src])
            if layer_of(src) and layer_of(dst)  # unplaced modules fail test_every_module_has_a_layer
            and rank[layer_of(dst)] > rank[layer_of(src)] and (src, dst) not in allowed]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


GRAPH = import_graph(module_files())


def test_every_module_has_a_layer():
    unplaced = [m for m in GRAPH if layer_of(m) is None]
    assert not unplaced, f"place these modules in a layer (tests/test_layers.py and docs/architecture.md): {unplaced}"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(GRAPH)
    assert not bad, "upward imports (layers, lowest first: " + " < ".join(LAYERS) + "):\n" + "\n".join(bad)
    assert all(dst in GRAPH[src] for src, dst in ALLOWED_UPWARD), "an allowed exception is gone: drop it"


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_core_imports_only_numpy_at_module_level():
    """`import fer_edge` must need numpy only: heavy libraries load lazily, inside functions."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for name, (path, _) in module_files().items():
        if layer_of(name) != "core":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            bad += [f"{name}: {t}" for t in tops if t not in stdlib | CORE_THIRD_PARTY | {"fer_edge"}]
    assert not bad, bad


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The rule bites: a core module importing training, and two modules importing each other."""
    pkg = tmp_path / "fer_edge"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text("def f():\n    from .train import loop\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("from ..metrics import f\nfrom . import tta\n")
    (pkg / "train" / "tta.py").write_text("import fer_edge.train.loop\n")
    graph = import_graph(module_files({"fer_edge": pkg}))
    assert graph["fer_edge.metrics"] == {"fer_edge.train.loop"}
    assert upward_imports(graph) == ["fer_edge.metrics (core) imports fer_edge.train.loop (train)"]
    assert cycles(graph) == [["fer_edge.metrics", "fer_edge.train.loop", "fer_edge.train.tta"]]
