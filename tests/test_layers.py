"""The package's layers: each module imports only modules of its own layer or below (every import counted, also
those inside functions), no module imports another that imports it back, and no sub-package imports another that
imports it back (a package stands on one floor: orchestration above the pure code it runs)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module belongs to the longest prefix listed; within a layer, packages may import each other
# (acyclically). CONTRIBUTING.md draws the same picture.
LAYERS: list[tuple[str, ...]] = [
    ("scgan.utils", "scgan.config"),  # foundation: no model, no torch network
    ("scgan.calibration", "scgan.evaluation"),  # pure statistics and metrics: arrays in, numbers out
    ("scgan.data", "scgan.models"),  # the library: images and tensors, the kinds of model
    ("scgan.artifacts", "scgan.reporting"),  # file formats (model, ONNX) and report files
    ("scgan.training", "scgan.inference"),  # fitting (Lightning lives here only) and scoring (never Lightning)
    ("scgan.serve", "scgan.experiments", "scgan.record"),  # the service, the paper's studies, the inspection record
    ("scgan.commands",),  # one module per CLI command
    ("scgan.cli", "scgan.__main__"),  # parsing and dispatch
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "scgan").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every scgan module named by an import anywhere in the file (relative imports resolved)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.module == "scgan" and [a.name for a in node.names] == ["__version__"]:
                continue  # the root's one eager name: it imports nothing
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "scgan" or m.startswith("scgan.")}


def layer_of(module: str) -> int | None:
    """The layer index of ``module`` (None for the package itself, whose lazy exports sit above every layer)."""
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    return None if best is None else best[0]


def test_every_module_belongs_to_a_layer():
    orphans = [m for m in _modules() if m != "scgan" and layer_of(m) is None]
    assert not orphans, f"modules outside every layer (add them to LAYERS and CONTRIBUTING.md): {orphans}"


def test_each_layer_imports_only_its_own_and_lower_layers():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        mine = layer_of(name)
        if mine is None:
            continue
        for target in _imports(name, path):
            if target == "scgan":
                wrong.append(f"{name} imports the package root (import the module that owns the name)")
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path) if t in modules and t != name} for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def package_of(module: str) -> str:
    """The sub-package a module belongs to ("scgan.models" for scgan.models.scgan.kind; "scgan.cli" for itself)."""
    return ".".join(module.split(".")[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (node -> the nodes it imports) as [a, b, ..., a], or [] where there is none."""
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt):] + [nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [nxt]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if state.get(name) is None and visit(name, [name]):
            break
    return cycle


def package_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Which sub-package imports which (every import of every module counted; the root's lazy exports aside)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "scgan":
            continue
        mine = package_of(name)
        targets = {package_of(t) for t in _imports(name, path) if t != "scgan"}
        graph.setdefault(mine, set()).update(t for t in targets if t != mine)
    return graph


def test_no_import_cycle_between_packages():
    cycle = find_cycle(package_graph(_modules()))
    assert not cycle, "packages import each other: " + " -> ".join(cycle)


def test_the_package_check_sees_a_cycle():
    """The check above fails on a cycle between packages whose modules form none (models.a -> calibration.b,
    calibration.c -> models.d): what a module check cannot see."""
    graph = {"scgan.models": {"scgan.calibration"}, "scgan.calibration": {"scgan.models"}, "scgan.utils": set()}
    assert find_cycle(graph) == ["scgan.calibration", "scgan.models", "scgan.calibration"]
    assert find_cycle({"scgan.models": {"scgan.utils"}, "scgan.utils": set()}) == []


# Where a kind's name may be compared with another: the kinds' own folders and the registries that list them.
KIND_OWNERS = ("scgan.models.scgan", "scgan.models.patchcore", "scgan.models.registry", "scgan.training.fit",
               "scgan.config")
_KIND_BRANCH = re.compile(r"""\bkind\s*(?:[!=]=|(?:not\s+)?in)\s*(?:["'(\[]|[A-Z_]+\.name)"""  # kind == "scgan"
                          r"""|["']\s*[!=]=\s*\S*\bkind\b""")  # "scgan" == kind


def test_no_branch_on_the_model_kind_outside_its_folder_and_the_registries():
    """Everything else talks to a kind through its ModelKind: ``if cfg.kind == "scgan"`` anywhere else would make a
    new kind edit that place too."""
    found = []
    for name, path in _modules().items():
        if name.startswith(KIND_OWNERS):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _KIND_BRANCH.search(code) and "multipart" not in code:  # a request's content kind is no model kind
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_inference_never_imports_lightning():
    """Loading, scoring, predicting, exporting and serving run without Lightning installed."""
    modules = _modules()
    inference = [m for m in modules if layer_of(m) is not None and m.split(".")[1] in
                 ("inference", "artifacts", "serve", "models", "calibration", "data", "evaluation", "reporting")]
    users = []
    for name in inference:
        tree = ast.parse(modules[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names):
                users.append(name)
    assert not users, users
