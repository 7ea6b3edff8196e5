"""``scgan predict --engine ray``: a local Ray of 2 worker processes writes the local run's rows and overlays, resumes
without scoring a file twice, counts an unreadable file as the local run does, and refuses a missing cluster."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def _rows(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv", newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_ray_scores_as_the_local_run_and_resumes_without_scoring_twice(trained, demo_root, demo_category, tmp_path,
                                                                      local_ray, capsys):
    from scgan.cli import main
    from scgan.inference import cluster

    images = tmp_path / "images"
    shutil.copytree(demo_root / demo_category / "test", images)
    (images / "good" / "zz_bad.png").write_bytes(b"not an image")
    model = str(trained[0].model_path)
    assert main(["predict", "--checkpoint", model, "--output", str(tmp_path / "local"), "--no-progress",
                 str(images)]) == 0
    assert main(["predict", "--checkpoint", model, "--output", str(tmp_path / "ray"), "--no-progress",
                 "--engine", "ray", "--batch-size", "4", str(images)]) == 0  # 3 batches over the 2 workers
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert local.keys() == remote.keys() and len(local) > 5
    for path, row in local.items():
        other = remote[path]
        assert row["decision"] == other["decision"]
        for key in ("score", "map_max"):
            assert (row[key] == "") == (other[key] == "")  # empty for the unreadable file in both
            if row[key]:
                assert abs(float(row[key]) - float(other[key])) <= 1e-5
        assert (row["overlay"] == "") == (other["overlay"] == "")
        if row["overlay"]:
            assert Path(row["overlay"]).relative_to(tmp_path / "local") == \
                Path(other["overlay"]).relative_to(tmp_path / "ray")
            assert Path(other["overlay"]).read_bytes() == Path(row["overlay"]).read_bytes()
    assert "skipped 1 unreadable" in capsys.readouterr().out

    # A restarted driver: the journal lost its last rows, the last one it kept cut mid-line by the crash; only
    # those files are scored again (their overlays rewritten, the others' untouched), none is recorded twice, and
    # the first row after the cut starts a line of its own.
    journal = tmp_path / "ray" / cluster.JOURNAL
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:20])
    overlays = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "overlays").rglob("*.png")}
    assert main(["predict", "--checkpoint", model, "--output", str(tmp_path / "ray"), "--no-progress",
                 "--engine", "ray", str(images)]) == 0
    after = journal.read_text().splitlines()
    assert len(after) == len(lines) + 1 and after[len(lines) - 3] == lines[-3][:20]  # the cut line, alone
    assert _rows(tmp_path / "ray").keys() == local.keys()
    rewritten = [p for p, t in overlays.items() if p.stat().st_mtime_ns != t]
    assert 1 <= len(rewritten) <= 3


def test_an_address_with_no_cluster_is_one_line_and_exit_1(trained, tmp_path, capsys, demo_root, demo_category):
    pytest.importorskip("ray")
    from scgan.cli import main

    rc = main(["predict", "--checkpoint", str(trained[0].model_path), "--output", str(tmp_path / "o"),
               "--engine", "ray", "--address", "127.0.0.1:9", str(demo_root / demo_category / "test")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err[0]


def test_a_worker_that_dies_halfway_loses_no_image_and_scores_none_twice(trained, demo_root, demo_category,
                                                                         tmp_path, local_ray):
    from scgan.inference.cluster import JOURNAL, ScoreFiles, run_predict_ray

    class Dying(ScoreFiles):
        def __call__(self, batch):
            marker = self.out / "died"
            if not marker.exists():
                marker.touch()
                os._exit(1)  # the worker process dies, its batch unfinished
            return super().__call__(batch)

    images = demo_root / demo_category / "test"
    res = run_predict_ray([images], tmp_path / "out", model=str(trained[0].model_path), batch_size=4,
                          progress=False, actor=Dying)
    assert (tmp_path / "out" / "died").exists()  # a worker did die
    head, *rows = (tmp_path / "out" / JOURNAL).read_text().splitlines()
    assert json.loads(head)["model_sha256"]  # the rows are that model's
    paths = [json.loads(line)["path"] for line in rows]
    assert len(paths) == len(set(paths)) == len(res.predictions) == len(list(images.rglob("*.png")))


def test_without_ray_the_engine_names_the_extra_in_one_line(trained, tmp_path, capsys, demo_root, demo_category,
                                                            monkeypatch):
    import sys

    from scgan.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as where it is not installed
    rc = main(["predict", "--checkpoint", str(trained[0].model_path), "--output", str(tmp_path / "o"),
               "--engine", "ray", str(demo_root / demo_category / "test")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "pip install 'scgan[cluster]'" in err[0]


def test_a_journal_of_another_model_gives_no_row_to_reuse(tmp_path):
    from scgan.inference.cluster import _read_journal

    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps({"model_sha256": "a" * 64}) + "\n" + json.dumps({"path": "/x.png", "index": 0})
                       + "\n")
    assert set(_read_journal(journal, "a" * 64)) == {"/x.png"}
    assert _read_journal(journal, "b" * 64) == {}  # another model's scores are not this one's
