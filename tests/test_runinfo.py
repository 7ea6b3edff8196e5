"""Provenance: the commit a result records is the one its invocation started from."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scgan.utils import runinfo

pytestmark = pytest.mark.unit


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}


def _commit(path: Path) -> None:
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "c"], cwd=path, check=True, env=GIT_ENV)


def _repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, env=GIT_ENV)
    _commit(path)
    return path


def test_git_commit_is_the_one_the_process_started_from(tmp_path, monkeypatch):
    monkeypatch.setattr(runinfo, "_FIRST_SEEN", {})
    repo = _repo(tmp_path / "r")
    first = runinfo.git_commit(repo)
    assert len(first) == 40 and first == runinfo._head_commit(str(repo))
    _commit(repo)  # HEAD moves while a long benchmark runs
    assert runinfo._head_commit(str(repo)) != first
    assert runinfo.git_commit(repo) == first  # results still name the code that produced them


def test_git_commit_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(runinfo, "_FIRST_SEEN", {})
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert runinfo.git_commit(tmp_path) == "unknown"


def test_worker_processes_record_the_parents_commit(monkeypatch):
    """scgan benchmark --jobs N spawns workers: they inherit the commit the invocation started from."""
    monkeypatch.setattr(runinfo, "_FIRST_SEEN", {})
    monkeypatch.delenv(runinfo.COMMIT_ENV, raising=False)
    started = runinfo.git_commit()
    import os

    assert os.environ[runinfo.COMMIT_ENV] == started
    code = "from scgan.utils.runinfo import git_commit; print(git_commit())"
    monkeypatch.setenv(runinfo.COMMIT_ENV, "abc123-started")  # what a parent that began at another commit set
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "abc123-started", out.stderr[-500:]
