"""The scoring backend: ``auto`` runs the PatchCore detector on its exported graph, cached beside the model file
(or in the user cache where that folder cannot be written), with torch's scores; torch where it must."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cached(feature_model, tmp_path_factory) -> tuple[Path, Path]:
    """The session's tiny PatchCore model copied into a folder of its own and loaded once with ``auto``, which
    exported its graph there: (model file, cached graph). Exporting takes seconds, so it is done once here."""
    from scgan.inference.detector import Detector

    folder = tmp_path_factory.mktemp("cached")
    model = Path(shutil.copy(feature_model[0].model_path, folder / "model.pt"))
    Detector.load(model)
    (graph,) = folder.glob(".model.pt.*.onnx")
    return model, graph


@pytest.fixture
def model_copy(cached, tmp_path, monkeypatch) -> Path:
    """The model file alone in a new folder; an export there copies the module's graph (the same bytes a real
    export writes for this model: its cache key is the file's hash), so that no test exports twice."""
    from scgan.artifacts import export

    folder = tmp_path / "run"
    folder.mkdir()
    graph = cached[1].read_bytes()

    def copy_export(checkpoint, output, *args, **kwargs):
        Path(output).write_bytes(graph)
        return Path(output)

    monkeypatch.setattr(export, "export_onnx", copy_export)
    return Path(shutil.copy(cached[0], folder / "model.pt"))


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SCGAN_CACHE_DIR", str(tmp_path / "user_cache"))
    return tmp_path / "user_cache"


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64, 3), (50, 120, 3), (90, 70, 3))]


def _refuse_folder(monkeypatch, folder: Path) -> list[Path]:
    """Make every export into ``folder`` fail as a read-only folder does; returns the paths exported elsewhere."""
    from scgan.artifacts import export

    original, written = export.export_onnx, []

    def export_onnx(checkpoint, output, *args, **kwargs):
        if Path(output).parent == folder:
            raise PermissionError(13, "Permission denied", str(output))
        written.append(Path(output))
        return original(checkpoint, output, *args, **kwargs)

    monkeypatch.setattr(export, "export_onnx", export_onnx)
    return written


def test_auto_scores_a_patchcore_model_on_its_cached_graph_as_torch_does(cached, monkeypatch):
    from scgan.artifacts import export
    from scgan.inference.detector import Detector

    model, graph = cached
    assert graph.parent == model.parent and graph.stat().st_size > 1000
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: pytest.fail("exported again though the graph is cached"))
    auto = Detector.load(model)  # a second start reads the cache
    torch_det = Detector.load(model, backend="torch")
    assert (auto.backend, torch_det.backend) == ("onnx", "torch")
    assert auto.path == model and auto.describe()["model_file"] == "model.pt"
    for image in _images():
        a, b = auto.predict(image), torch_det.predict(image)
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=1e-4)


def test_a_folder_that_cannot_be_written_caches_in_the_user_cache(model_copy, user_cache, monkeypatch):
    from scgan.inference.detector import Detector

    written = _refuse_folder(monkeypatch, model_copy.parent)
    det = Detector.load(model_copy)
    assert det.backend == "onnx"
    assert len(written) == 1 and written[0].parent == user_cache and written[0].is_file()
    assert not list(model_copy.parent.glob(".*.onnx"))
    assert Detector.load(model_copy).backend == "onnx" and len(written) == 1  # found there the next time


def test_with_no_folder_to_cache_in_auto_falls_back_to_torch_in_one_line(model_copy, user_cache, monkeypatch,
                                                                         caplog):
    from scgan.inference.detector import Detector

    _refuse_folder(monkeypatch, model_copy.parent)
    _refuse_folder(monkeypatch, user_cache)
    with caplog.at_level(logging.WARNING, logger="scgan"):
        det = Detector.load(model_copy)
    assert det.backend == "torch"
    lines = [r.getMessage() for r in caplog.records if "scoring on torch" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "Permission denied" in lines[0]
    with pytest.raises(OSError, match="no folder to cache"):
        Detector.load(model_copy, backend="onnx")  # asked for by name: an error, not a fallback


def test_without_onnxruntime_auto_is_torch_and_onnx_names_the_extra(model_copy, monkeypatch):
    from scgan.inference import backend
    from scgan.inference.detector import Detector

    monkeypatch.setattr(backend, "onnx_available", lambda: False)
    assert Detector.load(model_copy).backend == "torch"
    with pytest.raises(ImportError, match=r"pip install 'scgan\[onnx\]'"):
        Detector.load(model_copy, backend="onnx")
    assert not list(model_copy.parent.glob(".*.onnx"))


def test_a_damaged_cache_is_exported_again_and_a_changed_model_replaces_its_graph(model_copy, user_cache):
    from scgan.artifacts.model_file import load_model, save_model
    from scgan.inference.detector import Detector

    Detector.load(model_copy)
    (first,) = model_copy.parent.glob(".model.pt.*.onnx")
    good = first.read_bytes()
    first.write_bytes(good[: len(good) // 2])  # truncated
    assert Detector.load(model_copy).backend == "onnx"
    assert first.read_bytes() == good
    loaded = load_model(model_copy)
    save_model(model_copy, loaded.config, loaded.parts, loaded.calibration, loaded.augmentation,
               {**loaded.meta, "note": "another version"}, input_spec=loaded.input_spec)
    assert Detector.load(model_copy).backend == "onnx"
    (second,) = model_copy.parent.glob(".model.pt.*.onnx")  # the earlier version's graph is gone
    assert second != first


def test_auto_keeps_the_scgan_on_torch_and_writes_no_graph(trained):
    from scgan.inference.detector import Detector

    model = trained[0].model_path
    assert Detector.load(model).backend == "torch"
    assert not list(Path(model).parent.glob(".*.onnx"))
    with pytest.raises(ValueError, match="unknown backend"):
        Detector.load(model, backend="tensorrt")


def test_one_image_at_a_time_gives_the_batchs_numbers(cached, monkeypatch):
    from scgan.artifacts import onnx_file
    from scgan.data.io import image_to_array, prepare_image
    from scgan.inference.detector import Detector

    det = Detector.load(cached[0])
    runner = det._score.__self__
    x = np.stack([image_to_array(prepare_image(im, det.spec)) for im in _images()[:1] * 3]).astype(np.float32)
    x[1] = -x[1]
    batch = runner.run(x)
    monkeypatch.setattr(onnx_file, "ONE_AT_A_TIME_PIXELS", 0)
    calls = []
    monkeypatch.setattr(runner.session, "run", lambda *a: calls.append(a) or pytest.fail("the batch's session ran"))
    single = runner.run(x)  # on the one-thread sessions, one image each
    assert not calls and runner._free.qsize() >= 1
    for a, b in zip(batch, single):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_scgan_predict_takes_a_backend_and_both_write_the_same_rows(model_copy, user_cache, tmp_path, demo_root,
                                                                    demo_category):
    import csv

    from scgan.cli import main

    images = demo_root / demo_category / "test"
    rows = {}
    for backend in ("auto", "torch"):
        out = tmp_path / backend
        assert main(["predict", "--checkpoint", str(model_copy), "--output", str(out), "--backend", backend,
                     "--no-progress", str(images)]) == 0
        with open(out / "predictions.csv", newline="") as f:
            rows[backend] = {r["path"]: r for r in csv.DictReader(f)}
    assert rows["auto"].keys() == rows["torch"].keys() and rows["auto"]
    for path, row in rows["auto"].items():
        assert abs(float(row["map_max"]) - float(rows["torch"][path]["map_max"])) < 1e-3  # as the CSV rounds
        assert row["decision"] == rows["torch"][path]["decision"]


@pytest.mark.unit
def test_a_model_file_replaced_while_it_is_read_never_gets_the_old_models_graph(tmp_path, monkeypatch):
    """The graph is cached under the hash of the bytes that were loaded: a file replaced between the load and the
    hash would otherwise serve the old model's graph, under the new file's key, to every later start."""
    from types import SimpleNamespace

    from scgan.inference.backend import cache_key, choose_backend

    model = tmp_path / "model.pt"
    keys = {}
    for content in ("A", "B"):
        model.write_text(content)
        keys[content] = cache_key(model)
    model.write_text("A")
    exported = []

    def load_then_replaced(path):  # the file read as it was, then replaced by a newer version
        loaded = SimpleNamespace(kind=SimpleNamespace(scoring_backend="onnx"), content=Path(path).read_text())
        Path(path).write_text("B")
        return loaded

    def export(loaded, output, *args, **kwargs):
        exported.append((loaded.content, Path(output).name))
        Path(output).write_bytes(b"graph")

    monkeypatch.setattr("scgan.inference.backend.onnx_available", lambda: True)
    monkeypatch.setattr("scgan.artifacts.model_file.load_model", load_then_replaced)
    monkeypatch.setattr("scgan.artifacts.export.export_onnx", export)
    choose_backend(model, "auto")
    assert all(keys[content] in name for content, name in exported), exported
