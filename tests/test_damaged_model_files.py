"""A damaged model file is refused where it is loaded, a broken model never calls a defect normal, and the
commands that write model files (calibrate, export) never damage one or write one from too little.

Each test is one guarantee of docs/reliability.md.
"""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import http_request, one_error_line, png_bytes
from scgan.artifacts.model_file import CheckpointError, load_model
from scgan.calibration.stats import Calibration, ScoreStats
from scgan.cli import main
from scgan.inference.detector import Detector
from scgan.inference.predict import run_predict

pytestmark = pytest.mark.integration


def _nan_scoring(detector: Detector) -> Detector:
    """A copy of ``detector`` whose network answers nan for every score (a model broken after loading)."""
    broken = copy.copy(detector)
    score = detector._score

    def nan_scores(x):
        s, m = score(x)
        return np.full_like(s, np.nan), m

    broken._score = nan_scores
    return broken


# ---- a damaged model file is refused; a broken model fails closed ------------------------------------------
def _damaged(trained, tmp_path: Path) -> dict[str, Path]:
    """Hand-damaged copies of the trained model file: a nan weight, a nan threshold, an infinite map scale."""
    obj = torch.load(trained[0].model_path, weights_only=True)
    out = {}
    for name in ("weight", "threshold", "map_high"):
        broken = copy.deepcopy(obj)
        if name == "weight":
            key = next(k for k, v in broken["parts"]["generator"].items() if v.is_floating_point())
            broken["parts"]["generator"][key].view(-1)[0] = float("nan")
        elif name == "threshold":
            for stats in broken["calibration"]["scores"].values():
                stats["threshold"] = float("nan")
        else:
            broken["calibration"]["map_high"] = float("inf")
        out[name] = tmp_path / f"nan_{name}.pt"
        torch.save(broken, out[name])
    return out


def test_model_file_with_nan_weights_or_threshold_is_refused_at_load(trained, tmp_path, capsys, monkeypatch,
                                                                         demo_root, demo_category):
    import scgan.serve

    def never(*args, **kwargs):
        raise AssertionError("a broken model was served")

    monkeypatch.setattr(scgan.serve, "serve", never)
    image = sorted((demo_root / demo_category / "test").rglob("*.png"))[0]
    for what, path in _damaged(trained, tmp_path).items():
        with pytest.raises(CheckpointError, match=f"{path}.*(nan|inf)"):
            load_model(path)
        with pytest.raises(CheckpointError, match=str(path)):
            Detector.load(path)
        for argv, command in (([image], "predict"), ([], "serve")):
            extra = ["--output", str(tmp_path / "out")] if command == "predict" else ["--port", "0"]
            capsys.readouterr()
            assert main([command, "--checkpoint", str(path), *extra, *map(str, argv)]) == 1, (what, command)
            line = one_error_line(capsys.readouterr().err, command)
            assert str(path) in line and ("nan" in line or "inf" in line), line
        assert not (tmp_path / "out" / "predictions.csv").exists()


def test_a_feature_scale_that_is_zero_or_not_a_number_is_refused_at_load(feature_model, tmp_path, capsys,
                                                                         demo_root, demo_category):
    """A fitted scale is 1 / a layer's spread: positive and finite. Zero would blank the features (every image as
    near the bank as any other), nan or inf would score nan: the file is damaged, and says so at load."""
    obj = torch.load(feature_model[0].model_path, weights_only=True)
    image = sorted((demo_root / demo_category / "test").rglob("*.png"))[0]
    for what, value in (("zero", 0.0), ("negative", -1.0), ("nan", float("nan")), ("inf", float("inf"))):
        broken = copy.deepcopy(obj)
        scale = broken["parts"]["memory"]["scale"]
        scale[:] = value if what == "zero" else scale
        scale[0] = value
        path = tmp_path / f"scale_{what}.pt"
        torch.save(broken, path)
        with pytest.raises(CheckpointError, match=f"{path} is damaged.*feature scale is {value:g} at"):
            load_model(path)
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(path), "--output", str(tmp_path / "out"), str(image)]) == 1
        assert "feature scale" in one_error_line(capsys.readouterr().err, "predict")
    assert not (tmp_path / "out").exists()


def test_score_that_is_not_a_number_is_never_called_normal(detector, tmp_path, demo_root, demo_category):
    cal = Calibration(quantile=0.99, n_images=20, scores={"s": ScoreStats(0.0, 1.0, 0.5, 0.1, threshold=1.0)})
    values = np.array([0.5, 1.5, np.nan, np.inf, -np.inf])
    assert cal.decide("s", values).tolist() == [False, True, True, True, True]
    broken = _nan_scoring(detector)
    r = broken.predict(png_bytes())
    assert np.isnan(r.score) and r.anomalous is True and r.decision == "anomalous"
    assert r.to_dict()["score"] is None and r.to_dict()["decision"] == "anomalous"  # strict JSON: no nan
    images = sorted((demo_root / demo_category / "test").rglob("*.png"))[:3]
    out = run_predict(images, tmp_path / "p", detector=broken, overlays=False, progress=False)
    with open(out.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {row["decision"] for row in rows} == {"anomalous"}
    from helpers import live_server
    from scgan.serve import create_app

    with live_server(create_app(broken)) as port:
        status, _, body = http_request(port, "POST", "/predict?overlay=false", files=[("a.png", png_bytes())])
    assert status == 200 and body["results"][0]["decision"] == "anomalous" and body["results"][0]["score"] is None


def _edited_onnx(src: Path, dst: Path, edit) -> Path:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _set_meta(model, key: str, value: str | None) -> None:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    for k, v in kept + ([(key, value)] if value is not None else []):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def test_an_onnx_file_with_nan_weights_or_threshold_is_refused_at_load(exported_onnx, tmp_path, capsys):

    from onnx import numpy_helper

    from scgan.artifacts.onnx_file import META_CALIBRATION, OnnxModelError

    def nan_weight(model):
        init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # a convolution's weights
        w = numpy_helper.to_array(init).copy()
        w.flat[0] = np.nan
        init.CopyFrom(numpy_helper.from_array(w, init.name))

    def nan_threshold(model):
        cal = json.loads(next(p.value for p in model.metadata_props if p.key == META_CALIBRATION))
        for stats in cal["scores"].values():
            stats["threshold"] = float("nan")
        _set_meta(model, META_CALIBRATION, json.dumps(cal))

    for edit, words in ((nan_weight, "nan or infinite"), (nan_threshold, "threshold is nan")):
        path = _edited_onnx(exported_onnx, tmp_path / f"{edit.__name__}.onnx", edit)
        with pytest.raises(OnnxModelError, match=words):
            Detector.load(path)
        assert main(["predict", "--onnx", str(path), "--output", str(tmp_path / "out"), str(path)]) == 1
        assert str(path) in one_error_line(capsys.readouterr().err, "predict")


# ---- an ONNX file whose graph was replaced -----------------------------------------------------------------
def _replacement_graph(original, k: int, opset: int = 17):
    """A graph with the original's input and output names that outputs zeros: (B, k) scores and (B, S, S) maps."""
    from onnx import TensorProto, helper, numpy_helper

    dims = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim[1:]]
    c, h, w = dims
    zeros = numpy_helper.from_array(np.zeros((c * h * w, k), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["scores"]),
             helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Sub", ["mean", "mean"], ["anomaly_map"])]
    graph = helper.make_graph(
        nodes, "replaced", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
         helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", h, w])], [zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for p in original.metadata_props:  # the metadata kept, the graph replaced
        entry = model.metadata_props.add()
        entry.key, entry.value = p.key, p.value
    return model


def test_an_onnx_file_whose_graph_was_replaced_is_refused_at_load(exported_onnx, detector, tmp_path, caplog):
    onnx = pytest.importorskip("onnx")
    from scgan.artifacts.onnx_file import OnnxModelError, OnnxScorer

    original = onnx.load(str(exported_onnx))
    k = len(detector.score_names)
    for name, kk, words in (("zeros", k, "reference image"), ("fewer_scores", 2, "number of scores is 2")):
        path = tmp_path / f"{name}.onnx"
        onnx.save(_replacement_graph(original, kk), str(path))
        with pytest.raises(OnnxModelError, match=f"{path}: .*{words}.*export the model again"):
            Detector.load(path)
    # The file as exported loads and agrees with the torch model; one from before reference scores loads, with a
    # warning, and its shapes are still checked.
    from scgan.artifacts.onnx_file import META_REFERENCE

    image = png_bytes()
    assert Detector.load(exported_onnx).predict(image).scores == pytest.approx(detector.predict(image).scores, abs=1e-4)
    old = _edited_onnx(exported_onnx, tmp_path / "old.onnx", lambda m: _set_meta(m, META_REFERENCE, None))
    with caplog.at_level("WARNING"):
        OnnxScorer(old)
    assert any("has no reference scores" in r.getMessage() for r in caplog.records)
    old_replaced = _replacement_graph(original, 2)
    _set_meta(old_replaced, META_REFERENCE, None)
    onnx.save(old_replaced, str(tmp_path / "old_replaced.onnx"))
    with pytest.raises(OnnxModelError, match="number of scores"):
        OnnxScorer(tmp_path / "old_replaced.onnx")


def _keep_aspect_graph(original, k: int, opset: int = 17):
    """A graph taking sides in multiples of 16, as the export names them for a kind that keeps the aspect, that
    outputs zeros: (B, k) scores and (B, H, W) maps; the original's metadata kept."""
    from onnx import TensorProto, helper, numpy_helper

    sides = ["16*height_blocks", "16*width_blocks"]
    nodes = [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["scores"]),
             helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Sub", ["mean", "mean"], ["anomaly_map"])]
    graph = helper.make_graph(
        nodes, "keep_aspect", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, *sides])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
         helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", *sides])],
        [numpy_helper.from_array(np.zeros((3, k), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for p in original.metadata_props:
        entry = model.metadata_props.add()
        entry.key, entry.value = p.key, p.value
    return model


def test_an_onnx_file_whose_metadata_disagrees_with_its_graph_is_refused_at_load(exported_onnx, detector, tmp_path,
                                                                                  capsys):
    """Before a first image: an edited image size, input side, side multiple or working shape is refused in our line
    (not onnxruntime's at the first image, nor images brought to a shape the model was not exported for)."""
    onnx = pytest.importorskip("onnx")
    from scgan.artifacts.onnx_file import META_IMAGE_SIZE, META_INPUT, OnnxModelError

    original = onnx.load(str(exported_onnx))
    spec = json.loads(next(p.value for p in original.metadata_props if p.key == META_INPUT))
    assert spec["size"] == 32 and not spec["keep_aspect"]
    aspect = {**spec, "keep_aspect": True, "multiple": 16}

    def edited(size: int, spec: dict | None = None):
        def edit(model):
            _set_meta(model, META_IMAGE_SIZE, str(size))
            if spec is not None:
                _set_meta(model, META_INPUT, json.dumps(spec))
        return edit

    k = len(detector.score_names)
    cases = {
        "image_size": (original, edited(64), "scgan.image_size says '64', scgan.input size 32"),
        "input side": (original, edited(64, {**spec, "size": 64}), "input side is 32, its metadata says 64"),
        "side multiple": (_keep_aspect_graph(original, k), edited(32, {**aspect, "multiple": 32}),
                          "takes sides in multiples of 16, its metadata says 32"),
        "working shape": (_keep_aspect_graph(original, k), edited(48, {**aspect, "size": 48}),
                          r"makes a reference image of \(1, 3, 48, 48\), the model was exported with one of "
                          r"\(1, 3, 32, 32\)"),
    }
    for name, (model, edit, words) in cases.items():
        model = copy.deepcopy(model)
        edit(model)
        path = tmp_path / f"{name.replace(' ', '_')}.onnx"
        onnx.save(model, str(path))
        with pytest.raises(OnnxModelError, match=words):
            Detector.load(path)
        capsys.readouterr()
        assert main(["predict", "--onnx", str(path), "--output", str(tmp_path / "out"), str(path)]) == 1
        assert str(path) in one_error_line(capsys.readouterr().err, "predict"), name
    # The graph alone, its metadata as the export wrote it for a kind that keeps the aspect: it loads.
    model = _keep_aspect_graph(original, k)
    _set_meta(model, META_INPUT, json.dumps(aspect))
    _set_meta(model, "scgan.reference_scores", None)
    onnx.save(model, str(tmp_path / "fits.onnx"))
    Detector.load(tmp_path / "fits.onnx")


# ---- calibrate on a handful of images ----------------------------------------------------------------------
def _normal_folder(demo_root, demo_category, dst: Path, n: int) -> Path:
    dst.mkdir(parents=True)
    for p in sorted((demo_root / demo_category / "train" / "good").glob("*.png"))[:n]:
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_calibrate_refuses_fewer_than_five_images_and_warns_below_twenty(trained, tmp_path, capsys, caplog,
                                                                          demo_root, demo_category):
    model = str(trained[0].model_path)
    for n in (1, 3):
        folder = _normal_folder(demo_root, demo_category, tmp_path / f"n{n}", n)
        out = tmp_path / f"cal{n}.pt"
        assert main(["calibrate", "--checkpoint", model, "--normal", str(folder), "--output", str(out)]) == 1
        line = one_error_line(capsys.readouterr().err, "calibrate")
        assert f"at least 5 normal images, found {n}" in line and not out.exists()
    folder = _normal_folder(demo_root, demo_category, tmp_path / "n6", 6)
    out = tmp_path / "cal6.pt"
    with caplog.at_level("WARNING"):
        assert main(["calibrate", "--checkpoint", model, "--normal", str(folder), "--output", str(out)]) == 0
    assert any("rests on 6 normal validation image(s), fewer than 20" in r.getMessage() for r in caplog.records)
    loaded = load_model(out)
    assert loaded.calibration.n_images == 6 and "fewer than 20" in loaded.meta["calibration"]["calibration_warning"]


# ---- no command overwrites its input with another kind of file ---------------------------------------------
def test_calibrate_and_export_never_replace_their_input_by_another_kind_of_file(trained, tmp_path, capsys,
                                                                                 demo_root, demo_category):
    pytest.importorskip("onnx")
    normal = str(demo_root / demo_category / "train" / "good")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(trained[0].last_checkpoint.read_bytes())
    (tmp_path / "link.ckpt").symlink_to(ckpt)
    before = ckpt.read_bytes()
    for output in (ckpt, tmp_path / "run" / "checkpoints" / ".." / "checkpoints" / "last.ckpt", tmp_path / "link.ckpt"):
        assert main(["calibrate", "--checkpoint", str(ckpt), "--normal", normal, "--output", str(output)]) == 1
        assert "could no longer resume" in one_error_line(capsys.readouterr().err, "calibrate")
        assert ckpt.read_bytes() == before
    model = tmp_path / "model.pt"
    model.write_bytes(trained[0].model_path.read_bytes())
    before = model.read_bytes()
    assert main(["export", "--checkpoint", str(model), "--output", str(model)]) == 1
    assert "ONNX bytes would replace it" in one_error_line(capsys.readouterr().err, "export")
    assert model.read_bytes() == before
    # A slim model file may be re-calibrated in place: one model file atomically replaced by another.
    assert main(["calibrate", "--checkpoint", str(model), "--normal", normal, "--output", str(model)]) == 0
    assert load_model(model).calibration.n_images == len(list(Path(normal).glob("*.png")))


# ---- calibrate's bad images and its output folder's lock ---------------------------------------------------
def test_calibrate_skips_bad_images_when_told_as_its_hint_says(trained, tmp_path, capsys, demo_root, demo_category):
    folder = _normal_folder(demo_root, demo_category, tmp_path / "normal", 6)
    (folder / "zz_bad.png").write_bytes(b"not an image")
    args = ["calibrate", "--checkpoint", str(trained[0].model_path), "--normal", str(folder),
            "--output", str(tmp_path / "cal.pt")]
    assert main(args) == 1
    assert "skip_bad_images=true" in one_error_line(capsys.readouterr().err, "calibrate")
    assert main([*args, "skip_bad_images=maybe"]) == 1  # checked like any setting, not read as "truthy"
    assert "expected true/false" in one_error_line(capsys.readouterr().err, "calibrate")
    assert main([*args, "skip_bad_images=true"]) == 0
    loaded = load_model(tmp_path / "cal.pt")
    assert loaded.calibration.n_images == 6 and loaded.meta["calibration"]["skipped"] == [str(folder / "zz_bad.png")]
    assert loaded.config.data.skip_bad_images is False  # how these images were read is no part of the model


def test_calibrate_holds_its_output_folders_lock(trained, tmp_path, capsys, demo_root, demo_category):
    from scgan.utils.lock import folder_lock

    run = tmp_path / "run"
    run.mkdir()
    args = ["calibrate", "--checkpoint", str(trained[0].model_path), "--normal",
            str(demo_root / demo_category / "train" / "good"), "--output", str(run / "model.pt")]
    with folder_lock(run, "training"):  # a training (or another calibration) working there
        assert main(args) == 1
        line = one_error_line(capsys.readouterr().err, "calibrate")
        assert "in use by pid" in line and not (run / "model.pt").exists()
    assert main(args) == 0 and not (run / ".scgan.lock").exists()


# ---- a lock file that is not a regular file ----------------------------------------------------------------
def test_fifo_planted_as_the_lock_file_is_named_in_the_error(trained, tmp_path, capsys):
    import os

    from scgan.utils.lock import FolderLockedError, folder_lock

    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / ".scgan.lock")
    assert main(["test", "--checkpoint", str(trained[0].model_path), "--output", str(out), "--no-report"]) == 1
    line = one_error_line(capsys.readouterr().err, "test")
    assert f"the lock file {out / '.scgan.lock'} is not a regular file" in line and "remove it" in line
    with pytest.raises(FolderLockedError, match="not a regular file"):
        with folder_lock(out, "testing"):
            pass
    assert not (out / "metrics.json").exists()
