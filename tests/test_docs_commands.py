"""Every command and snippet in README.md and docs/*.md runs as written.

- each `scgan ...` line of a shell block is parsed by the real parser (no unknown option), and its config (preset,
  --config-free key=value settings) builds and passes the same checks as `scgan` itself;
- `scgan benchmark` and `scgan ablate` name their preset (the paper's tables are made with `cpu`);
- `python <script>` and `bash <script>` name scripts that exist; `make <target>` targets the Makefile has;
- every Python block of docs/ runs in a folder laid out as `make demo` leaves it (the README's own example runs in
  tests/test_readme.py).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "CONTRIBUTING.md"]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
SETTINGS_COMMANDS = ("train", "demo", "config", "benchmark", "ablate")


def _blocks(kind: str) -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for m in FENCE.finditer(path.read_text(encoding="utf-8")):
            if m.group(1) == kind:
                out.append((path.relative_to(REPO).as_posix(), m.group(2)))
    return out


def _shell_lines(text: str) -> list[str]:
    """Logical lines: continuations joined, comments and environment assignments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for where, text in _blocks("bash"):
        for line in _shell_lines(text):
            words = shlex.split(line)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the command
                words = words[1:]
            if words:
                found.append((where, words))
    return found


COMMANDS = _commands()


def _id(item) -> str:
    where, words = item
    return f"{where}: {' '.join(words)[:60]}"


@pytest.mark.unit
@pytest.mark.parametrize("item", [c for c in COMMANDS if c[1][0] in ("scgan", "python", "bash", "make")], ids=_id)
def test_documented_command_runs_as_written(item):
    where, words = item
    program, args = words[0], words[1:]
    if program == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
        assert all(a in targets or "=" in a for a in args), f"{where}: make has no target {args}"
        return
    if program in ("python", "bash"):
        if args and args[0] in ("-m", "-c"):  # a module or inline code, not a script of the repository
            return
        script = next((a for a in args if not a.startswith("-")), "")
        assert (REPO / script).is_file(), f"{where}: no script {script}"
        return
    from scgan.cli import build_parser
    from scgan.commands import COMMANDS as SCGAN_COMMANDS

    parsed, unknown = build_parser().parse_known_args(args)
    assert not unknown, f"{where}: scgan does not take {unknown}"
    command = parsed.command
    assert command in SCGAN_COMMANDS
    if command in ("benchmark", "ablate"):
        assert "--preset" in args, f"{where}: `scgan {command}` must name its preset (the tables use --preset cpu)"
    if command in SETTINGS_COMMANDS and parsed.config_file is None:
        from scgan.config import load_config, parse_overrides
        from scgan.models.checks import check_config

        check_config(load_config(parsed.preset, None, parse_overrides(parsed.overrides)))


@pytest.mark.unit
def test_the_docs_show_commands_at_all():
    assert sum(1 for _, w in COMMANDS if w[0] == "scgan") >= 8


@pytest.mark.integration
@pytest.mark.parametrize("block", [b for b in _blocks("python") if b[0] != "README.md"],  # tests/test_readme.py
                         ids=lambda b: b[0])
def test_documented_python_runs_as_written(block, tmp_path, feature_model, demo_root, demo_category):
    """In a folder laid out as `make demo` leaves it: runs/demo/data, runs/demo/train/model.pt (and model.onnx)."""
    import shutil

    where, code = block
    res, _ = feature_model
    demo = tmp_path / "runs" / "demo"
    shutil.copytree(demo_root, demo / "data")
    (demo / "train").mkdir(parents=True)
    shutil.copy(res.model_path, demo / "train" / "model.pt")
    if "model.onnx" in code:
        pytest.importorskip("onnxruntime")
    try:  # the model's graph, exported once a session: found beside the copy (the same bytes, the same cache key)
        from scgan.inference.backend import cached_graph

        graph = cached_graph(res.model_path)
        shutil.copy(graph, demo / "train" / graph.name)
        shutil.copy(graph, demo / "model.onnx")
    except ImportError:  # without onnxruntime the snippets score on torch
        pass
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{where}:\n{code}\n{out.stderr[-2000:]}"
