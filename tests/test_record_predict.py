"""``scgan predict --db``: every decision of a run also in the results store, beside predictions.csv."""
from __future__ import annotations

import csv

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
