"""``scgan predict --db``: every decision of a run also in the results store, beside predictions.csv."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from scgan.cli import main  # noqa: E402
from scgan.record.queries import counts, latest  # noqa: E402
from scgan.record.store import Store, sha256_bytes  # noqa: E402

pytestmark = pytest.mark.integration


def test_predict_records_each_decision_in_the_store(tmp_path, trained, demo_root, demo_category, capsys):
    images = demo_root / demo_category / "test"
    db = tmp_path / "store" / "results.db"
    db.parent.mkdir()
    args = ["predict", "--checkpoint", str(trained[0].model_path), "--output", str(tmp_path / "out"),
            "--db", str(db), "--no-progress", str(images)]
    assert main(args) == 0
    assert f"recorded in sqlite:///{db}" in capsys.readouterr().out
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with Store.open(str(db)) as store:
        recorded = {r["path"]: r for r in latest(store, limit=1000)}
        assert set(recorded) == {r["path"] for r in rows} and len(rows) > 3
        for r in rows:
            rec = recorded[r["path"]]
            assert rec["decision"] == r["decision"] and rec["source"] == "predict"
            assert rec["overlay"] == r["overlay"]
            assert rec["content_sha256"] == sha256_bytes(open(r["path"], "rb").read())
            assert float(r["score"]) == pytest.approx(rec["score"], rel=1e-5)
        assert main(args) == 0  # a second run adds its own rows: predict keeps every run
        assert counts(store, "model")[0].total == 2 * len(rows)


def test_predict_refuses_an_unreachable_store_before_scoring(tmp_path, trained, demo_root, capsys):
    args = ["predict", "--checkpoint", str(trained[0].model_path), "--output", str(tmp_path / "out"),
            "--db", str(tmp_path / "no" / "such" / "folder" / "results.db"), str(demo_root)]
    assert main(args) == 1
    assert "no folder for the results store" in capsys.readouterr().err
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_predict_records_absolute_paths_whatever_the_working_folder(tmp_path, trained, demo_root, demo_category,
                                                                   monkeypatch):
    # A store is read and pruned from other folders (scgan results prune, watch --keep-days): a relative overlay
    # path would name, and delete, another folder's file there.
    monkeypatch.chdir(tmp_path)
    images = demo_root / demo_category / "test"
    assert main(["predict", "--checkpoint", str(trained[0].model_path), "--output", "out", "--db", "results.db",
                 "--no-progress", os.path.relpath(images, tmp_path)]) == 0
    with Store.open(str(tmp_path / "results.db")) as store:
        rows = latest(store, limit=1000)
    assert rows and any(r["overlay"] for r in rows)
    for r in rows:
        assert Path(r["path"]).is_absolute() and Path(r["path"]).is_file()
        assert r["overlay"] is None or (Path(r["overlay"]).is_absolute() and Path(r["overlay"]).is_file())


def test_the_model_version_recorded_is_that_of_the_bytes_loaded(tmp_path, trained, feature_model, demo_root,
                                                                 demo_category, monkeypatch):
    """A model file replaced after predict loaded it: the store names the version that scored, not the new file."""
    import shutil

    from scgan.record.recorder import Recorder

    model = tmp_path / "model.pt"
    shutil.copyfile(trained[0].model_path, model)
    loaded_sha = sha256_bytes(model.read_bytes())
    opened = Recorder.open.__func__

    def replace_then_open(cls, *args, **kwargs):
        shutil.copyfile(feature_model[0].model_path, model)  # a new version lands between the load and the record
        return opened(cls, *args, **kwargs)

    monkeypatch.setattr(Recorder, "open", classmethod(replace_then_open))
    db = tmp_path / "results.db"
    assert main(["predict", "--checkpoint", str(model), "--output", str(tmp_path / "out"), "--db", str(db),
                 "--no-progress", str(next((demo_root / demo_category / "test" / "good").glob("*.png")))]) == 0
    assert sha256_bytes(model.read_bytes()) != loaded_sha
    with Store.open(str(db)) as store:
        assert [r["model_sha256"] for r in latest(store, limit=10)] == [loaded_sha]


def test_a_model_replaced_while_it_loads_is_loaded_again(tmp_path, trained, feature_model, monkeypatch):
    import shutil

    from scgan.inference.detector import Detector, load_detector

    model = tmp_path / "model.pt"
    shutil.copyfile(trained[0].model_path, model)
    load, calls = Detector.load.__func__, []

    def load_then_replace(cls, path, **kwargs):
        detector = load(cls, path, **kwargs)
        if not calls:
            shutil.copyfile(feature_model[0].model_path, model)  # replaced during the first load
        calls.append(path)
        return detector

    monkeypatch.setattr(Detector, "load", classmethod(load_then_replace))
    detector = load_detector(model, backend="torch")
    assert len(calls) == 2 and detector.info["kind"] == "patchcore"
    assert detector.info["sha256"] == sha256_bytes(feature_model[0].model_path.read_bytes())
