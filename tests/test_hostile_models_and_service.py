"""The service and the model files under attack; no broken model ever calls a defect normal.

Each test is one guarantee (docs/reliability.md, "Guarantees, round 3"). The service cases run
``scgan serve``'s own server (uvicorn with scgan's protocol) on 127.0.0.1 in a thread, bounded in requests and
seconds (``helpers.live_server``).
"""
from __future__ import annotations

import copy
import csv
import http.client
import io
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import one_error_line
from scgan.artifacts.model_file import CheckpointError, load_model
from scgan.calibration.stats import Calibration, ScoreStats
from scgan.cli import main
from scgan.inference.detector import Detector
from scgan.inference.predict import run_predict

pytestmark = pytest.mark.integration


def _png(size=(40, 30), mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def detector(trained):
    return Detector.load(trained[0].model_path)


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
              "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request(port: int, method: str, path: str, files: list[tuple[str, bytes]] | None = None,
             headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, str, dict]:
    """One request to the live server: (status, content type, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body, kind = _multipart(files) if files is not None else (None, None)
        conn.request(method, path, body=body, headers={**({"Content-Type": kind} if kind else {}), **(headers or {})})
        r = conn.getresponse()
        return r.status, r.getheader("content-type", ""), json.loads(r.read())
    finally:
        conn.close()


def _refusal(answer: tuple[int, str, dict], status: int) -> str:
    """The one sentence of a JSON refusal with ``status``."""
    got, kind, body = answer
    assert got == status and kind == "application/json" and set(body) == {"error"}, answer
    assert "\n" not in body["error"] and len(body["error"]) < 300, body
    return body["error"]


def _counting(detector: Detector) -> tuple[Detector, list]:
    """A copy of ``detector`` that records every batch it scores."""
    counted, calls = copy.copy(detector), []

    def score(x):
        calls.append(len(x))
        return detector._score(x)

    counted._score = score
    return counted, calls


def _nan_scoring(detector: Detector) -> Detector:
    """A copy of ``detector`` whose network answers nan for every score (a model broken after loading)."""
    broken = copy.copy(detector)
    score = detector._score

    def nan_scores(x):
        s, m = score(x)
        return np.full_like(s, np.nan), m

    broken._score = nan_scores
    return broken


# ---- 1. a broken model fails closed --------------------------------------------------------------------
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


def test_score_that_is_not_a_number_is_never_called_normal(detector, tmp_path, demo_root, demo_category):
    cal = Calibration(quantile=0.99, n_images=20, scores={"s": ScoreStats(0.0, 1.0, 0.5, 0.1, threshold=1.0)})
    values = np.array([0.5, 1.5, np.nan, np.inf, -np.inf])
    assert cal.decide("s", values).tolist() == [False, True, True, True, True]
    broken = _nan_scoring(detector)
    r = broken.predict(_png())
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
        status, _, body = _request(port, "POST", "/predict?overlay=false", files=[("a.png", _png())])
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
    import json

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


# ---- 4. an ONNX file whose graph was replaced ----------------------------------------------------------
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

    assert Detector.load(exported_onnx).predict(_png()).scores == pytest.approx(detector.predict(_png()).scores,
                                                                                abs=1e-4)
    old = _edited_onnx(exported_onnx, tmp_path / "old.onnx", lambda m: _set_meta(m, META_REFERENCE, None))
    with caplog.at_level("WARNING"):
        OnnxScorer(old)
    assert any("has no reference scores" in r.getMessage() for r in caplog.records)
    old_replaced = _replacement_graph(original, 2)
    _set_meta(old_replaced, META_REFERENCE, None)
    onnx.save(old_replaced, str(tmp_path / "old_replaced.onnx"))
    with pytest.raises(OnnxModelError, match="number of scores"):
        OnnxScorer(tmp_path / "old_replaced.onnx")


# ---- 2. calibrate on a handful of images -------------------------------------------------------------
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


# ---- 3. no command overwrites its input with another kind of file ------------------------------------
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


# ---- 9. minor cases ----------------------------------------------------------------------------------
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


# ---- 5. uploaded PostScript never runs Ghostscript ---------------------------------------------------
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch) -> Path:
    """A ``gs`` first on PATH that only records that it ran; returns the file it writes when it does."""
    from PIL import EpsImagePlugin

    ran = tmp_path / "gs_ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" > {ran}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks for gs again
    return ran


def test_postscript_is_never_decoded_by_the_library_readers(detector, tmp_path, fake_ghostscript):
    from scgan.data.io import ImageReadError, load_image
    from scgan.inference.detector import InputError

    eps = tmp_path / "drawing.png"  # the name does not matter: the bytes say what the file is
    eps.write_bytes(EPS)
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        detector.predict(eps)
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        detector.predict(EPS)
    with pytest.raises(ImageReadError):
        load_image(eps, 32)  # the data sets' reader
    out = run_predict([eps], tmp_path / "p", detector=detector, overlays=False, progress=False)
    assert not out.predictions and "not a PNG" in out.skipped[0][1]
    with Image.open(io.BytesIO(EPS)) as opened:  # a PIL image of the caller's own, not decoded yet
        with pytest.raises(InputError, match="EPS file is not scored"):
            detector.predict(opened)
    assert not fake_ghostscript.exists()
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "WEBP"):  # what is decoded
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(buf, format=fmt)
        assert detector.predict(buf.getvalue()).original_size == (20, 30), fmt


# ---- 8. every mode is bounded by max_side --------------------------------------------------------------
def _big_16_bit_png(side: int = 5000) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I", "TIFF"), ("F", "TIFF"),
                                       ("P", "PNG"), ("1", "PNG"), ("LA", "PNG"), ("RGB", "PNG")])
def test_every_image_mode_is_reduced_to_max_side_from_files_and_pil_images(detector, mode, fmt):
    """Also the minor case of PIL images of mode P, 1 and I;16, which Detector refused ('image has wrong mode')."""
    base = Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (40, 60)))  # 40 x 3000 grey ramp
    image = base.convert("RGB").convert("P") if mode == "P" else base.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    for x in (buf.getvalue(), image):
        r = detector.predict(x)
        assert r.original_size == (40, 3000) and max(r.image.shape[:2]) <= detector.max_side, (mode, type(x))
        assert r.image.shape[:2] == (20, 1500) and r.heat.shape == (20, 1500)


def test_huge_16_bit_png_is_reduced_while_read(detector, demo_root, demo_category):
    from scgan.data.io import load_image_with_size

    data = _big_16_bit_png()
    assert len(data) < 100_000
    r = detector.predict(data)
    assert r.original_size == (5000, 5000) and r.image.shape == (1667, 1667, 3) and r.overlay().size == (1667, 1667)
    img, size = load_image_with_size(io.BytesIO(data), None, max_side=2048)
    assert size == (5000, 5000) and img.shape == (1667, 1667, 3)


def test_big_endian_arrays_score_like_native_ones(detector):
    a = (np.arange(24 * 40, dtype=np.uint16) * 60).reshape(24, 40)
    assert detector.predict(a.astype(">u2")).scores == detector.predict(a).scores
    f = a.astype(np.float32) / 65535.0
    assert detector.predict(f.astype(">f4")).scores == detector.predict(f).scores


def test_an_uploaded_postscript_file_is_refused_unread(detector, fake_ghostscript):
    from helpers import live_server
    from scgan.serve import create_app

    with live_server(create_app(detector)) as port:
        answer = _request(port, "POST", "/predict", files=[("drawing.png", EPS)])
        assert "not an image this server reads (PNG, JPEG, BMP, TIFF or WebP)" in _refusal(answer, 415)
        answer = _request(port, "POST", "/predict?overlay=false", files=[("ok.webp", _webp())])
        assert answer[0] == 200 and answer[2]["results"][0]["width"] == 40
    assert not fake_ghostscript.exists()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_png())).save(buf, format="WEBP")
    return buf.getvalue()


# ---- 6. DNS rebinding and cross-origin requests ------------------------------------------------------
def test_foreign_host_names_and_origins_are_refused(detector):
    from helpers import live_server
    from scgan.serve import create_app
    from scgan.serve.server import allowed_hosts

    counted, calls = _counting(detector)
    with live_server(create_app(counted, allowed_hosts=allowed_hosts("127.0.0.1", ["scanner.local"]))) as port:
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.attacker.example:{port}"):
            assert "attacker.example" in _refusal(_request(port, "GET", "/model", headers={"Host": host}), 400)
            _refusal(_request(port, "POST", "/predict", files=[("a.png", _png())], headers={"Host": host}), 400)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", f"scanner.local:{port}"):
            assert _request(port, "GET", "/model", headers={"Host": host})[0] == 200, host
        for origin in ("http://attacker.example", f"http://attacker.example:{port}", "null",
                       f"http://localhost:{port + 1}"):
            answer = _request(port, "POST", "/predict", files=[("a.png", _png())], headers={"Origin": origin})
            assert "refused" in _refusal(answer, 403), origin
            _refusal(_request(port, "GET", "/model", headers={"Origin": origin}), 403)
        assert calls == []  # nothing refused was scored
        same = {"Origin": f"http://127.0.0.1:{port}"}  # the page itself
        assert _request(port, "POST", "/predict?overlay=false", files=[("a.png", _png())], headers=same)[0] == 200
        assert _request(port, "GET", "/model")[0] == 200  # a client that sends no Origin (curl, scripts)
        assert calls == [1]


# ---- 7. idle connections and bursts ------------------------------------------------------------------
def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (seconds from now)."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, float("inf")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def test_idle_connections_are_closed_and_never_starve_the_server(detector):
    from helpers import live_server
    from scgan.serve import Limits, create_app

    with live_server(create_app(detector, Limits(read_timeout_s=1.0))) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(15)]
        half = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
        for s in half:
            s.sendall(b"GET /hea")  # half a request line, never finished
        assert _request(port, "GET", "/health") == (200, "application/json", {"status": "ok"})
        closed = [_read_until_closed(s, 5.0) for s in idle + half]
        for s in idle + half:
            s.close()
        assert all(t < 4.0 for _, t in closed), [t for _, t in closed]  # read_timeout_s 1 s, with slack
        assert all(data == b"" for data, _ in closed[:15])  # nothing sent, nothing answered
        for data, _ in closed[15:]:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head.lower(), data
            assert "did not arrive within 1 s" in json.loads(body)["error"]
        assert _request(port, "GET", "/health")[0] == 200
    # Beyond the connection limit a request gets the service's JSON, not uvicorn's plain text.
    with live_server(create_app(detector, Limits(max_connections=12, read_timeout_s=30.0))) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
        time.sleep(0.2)
        assert "connections open" in _refusal(_request(port, "GET", "/health"), 503)
        for s in held:
            s.close()
        time.sleep(0.2)
        assert _request(port, "GET", "/health")[0] == 200


def test_request_that_trickles_or_stalls_is_cut_off(detector):
    from helpers import live_server
    from scgan.serve import Limits, create_app

    body, kind = _multipart([("a.png", _png())])
    with live_server(create_app(detector, Limits(read_timeout_s=1.0))) as port:
        trickle = socket.create_connection(("127.0.0.1", port), timeout=5)
        start = time.monotonic()
        try:  # one byte of the head every 0.2 s: each byte would reset a plain idle timer
            for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\n":
                trickle.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # cut off while still sending
        data, _ = _read_until_closed(trickle, 5.0)
        trickle.close()
        assert time.monotonic() - start < 4.0 and data.startswith(b"HTTP/1.1 408"), data
        stall = socket.create_connection(("127.0.0.1", port), timeout=5)
        stall.sendall(f"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])  # then nothing more
        data, closed = _read_until_closed(stall, 5.0)
        stall.close()
        assert closed < 4.0 and data.startswith(b"HTTP/1.1 408") and b"the rest of its body" in data, data
        for request in (b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000,  # no end in 16 KiB
                        b"NOT HTTP AT ALL\r\n\r\n"):  # uvicorn answered these in plain text
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                head, _, answer = _read_until_closed(s, 5.0)[0].partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and "not valid HTTP/1.1" in json.loads(answer)["error"], head
        assert _request(port, "GET", "/health")[0] == 200


def test_burst_of_forty_clients_gets_only_json_answers(detector):
    """1 worker and a queue of 8: the first 9 requests are scored, the other 31 told at once that it is busy."""
    from helpers import live_server
    from scgan.serve import create_app

    gate = threading.Event()
    slow = copy.copy(detector)

    def wait_then_score(x):
        gate.wait(30)
        return detector._score(x)

    slow._score = wait_then_score
    answers: list = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def client(port: int) -> None:
        start.wait(10)
        answer = _request(port, "POST", "/predict?overlay=false", files=[("a.png", _png())])
        with lock:
            answers.append(answer)

    with live_server(create_app(slow)) as port:
        threads = [threading.Thread(target=client, args=(port,), daemon=True) for _ in range(40)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(answers) < 31 and time.monotonic() < deadline:  # the refusals come before any scoring ends
            time.sleep(0.05)
        gate.set()
        for t in threads:
            t.join(30)
    assert len(answers) == 40
    busy = [a for a in answers if a[0] == 503]
    assert all("busy" in _refusal(a, 503) for a in busy)
    assert sorted(a[0] for a in answers) == [200] * 9 + [503] * 31


# ---- 8 (the service) ------------------------------------------------------------------------------------
def test_huge_16_bit_upload_is_scored_and_overlaid_at_max_side(detector):
    import base64

    from helpers import live_server
    from scgan.serve import create_app

    with live_server(create_app(detector)) as port:
        status, _, body = _request(port, "POST", "/predict", files=[("big.png", _big_16_bit_png())])
    assert status == 200, body
    r = body["results"][0]
    assert (r["width"], r["height"]) == (5000, 5000)
    overlay = Image.open(io.BytesIO(base64.b64decode(r["overlay"].split(",", 1)[1])))
    assert overlay.size == (1667, 1667)


# ---- 9 (the service) ------------------------------------------------------------------------------------
def test_serve_refuses_timeouts_and_ports_that_cannot_work_in_one_line(trained, capsys, monkeypatch):
    import scgan.serve

    model = str(trained[0].model_path)
    started = []
    monkeypatch.setattr(scgan.serve, "serve", lambda *a, **kw: started.append(kw))
    for flag, value in (("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "nan"), ("--read-timeout", "inf"),
                        ("--port", "70000"), ("--port", "-5")):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--checkpoint", model, flag, value])
        assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err, (flag, value)
    assert main(["serve", "--checkpoint", model, "--queue", "80"]) == 1  # above the 64 connections
    assert "max_connections (64) must exceed" in one_error_line(capsys.readouterr().err, "serve")
    assert started == []
    monkeypatch.undo()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", model, "--port", str(port)]) == 1
        out = capsys.readouterr()
        line = one_error_line(out.err, "serve")
        assert f"cannot listen on 127.0.0.1:{port}" in line and "another --port" in line and out.out == ""


def test_client_that_goes_away_mid_upload_is_one_log_line(detector, caplog):
    from helpers import live_server
    from scgan.serve import create_app

    body, kind = _multipart([("a.png", _png(size=(400, 400)))])
    with caplog.at_level("INFO"), live_server(create_app(detector)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 3])
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _request(port, "GET", "/health")[0] == 200
    mine = [r for r in caplog.records if r.name.startswith(("uvicorn", "scgan"))]
    assert [r.getMessage() for r in mine if "went away" in r.getMessage()] == \
        ["POST /predict: the client went away before its request arrived; nothing was answered"]
    assert not any(r.exc_info for r in mine) and not any(r.levelname in ("ERROR", "CRITICAL") for r in mine), \
        [r.getMessage() for r in mine]


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
