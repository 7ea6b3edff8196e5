"""ONNX export: onnxruntime matches torch, the file carries its calibration, predict --onnx runs without torch."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.artifacts.onnx_file import META_FORMAT_VERSION, OnnxModelError, OnnxScorer  # noqa: E402
from scgan.cli import main  # noqa: E402
from scgan.data.io import image_to_array  # noqa: E402
from scgan.models.scgan.scorer import score_names  # noqa: E402

SCORE_NAMES = score_names(head=False)


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory):
    """The tiny trained model exported through the CLI: (path to model.onnx, LoadedModel)."""
    res, _ = trained
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--checkpoint", str(res.model_path), "--format", "onnx", "--output", str(path)]) == 0
    return path, load_model(res.model_path)


@pytest.fixture(scope="module")
def demo_images(trained):
    """Five demo test images as float32 (5, 3, S, S) in [-1, 1], normal and anomalous."""
    from scgan.training.datamodule import SCGANDataModule

    _, cfg = trained
    ds = SCGANDataModule(cfg).dataset("test")
    idx = np.linspace(0, len(ds) - 1, 5).round().astype(int)
    assert len(set(ds.labels[idx].tolist())) == 2  # both kinds of image
    return image_to_array(np.stack([ds.images[i] for i in idx]))


@pytest.mark.integration
@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_torch(onnx_model, demo_images, batch):
    path, loaded = onnx_model
    x = demo_images[:batch]
    scores, maps = OnnxScorer(path).run(x)
    with torch.inference_mode():
        ts, tm = loaded.scorer()(torch.from_numpy(x))
    assert scores.shape == (batch, len(SCORE_NAMES)) and maps.shape == (batch, *x.shape[2:])
    np.testing.assert_allclose(scores, ts.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps, tm.numpy(), rtol=0, atol=1e-4)


@pytest.mark.integration
def test_onnx_file_carries_calibration_and_config(onnx_model):
    path, loaded = onnx_model
    runner = OnnxScorer(path)
    assert runner.calibration is not None and runner.calibration.to_dict() == loaded.calibration.to_dict()
    assert runner.config == loaded.config.identity()
    assert runner.image_size == loaded.config.model.image_size
    assert runner.default_score == loaded.default_score  # resolved: never "auto"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["scores", "anomaly_map"]
    assert all(v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output])  # dynamic batch


@pytest.mark.unit
def test_image_to_array_matches_image_to_tensor():
    from scgan.data.io import image_to_tensor

    img = np.random.default_rng(0).integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_array(img), image_to_tensor(img).numpy())


@pytest.mark.integration
def test_predict_onnx_equals_predict_checkpoint(onnx_model, trained, demo_root, demo_category, tmp_path):
    path, _ = onnx_model
    res, _ = trained
    files = sorted((demo_root / demo_category / "test").rglob("*.png"))
    renamed = tmp_path / "graph.bin"  # --onnx says what the file is, whatever its name
    shutil.copyfile(path, renamed)
    rows = {}
    for name, source in (("torch", ["--checkpoint", str(res.model_path)]), ("onnx", ["--onnx", str(renamed)])):
        out = tmp_path / name
        assert main(["predict", *source, "--output", str(out), "--no-overlays", "--no-progress",
                     *map(str, files)]) == 0
        rows[name] = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows["onnx"]) == len(files)
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["path"] == b["path"] and a["decision"] == b["decision"] != ""
        for col in ("score", "score_normalized", *SCORE_NAMES):
            assert float(b[col]) == pytest.approx(float(a[col]), abs=1e-4), col


@pytest.mark.system
def test_onnx_inference_modules_import_without_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # from here on, any `import torch` raises ImportError
        import scgan.calibration.stats, scgan.cli, scgan.artifacts.onnx_file, scgan.reporting.visualize
        scgan.cli.build_parser().parse_args(["predict", "--onnx", "m.onnx", "--output", "o", "x.png"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.system
def test_predict_onnx_runs_without_torch(onnx_model, demo_root, demo_category, tmp_path):
    """`scgan predict --onnx` in a process where `import torch` fails."""
    path, _ = onnx_model
    image = sorted((demo_root / demo_category / "test").rglob("*.png"))[0]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # from here on, any `import torch` raises ImportError
        from scgan.cli import main
        rc = main(["--debug", "predict", "--onnx", {str(path)!r}, "--output", {str(tmp_path)!r},
                   "--no-progress", {str(image)!r}])
        assert sys.modules["torch"] is None
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert len(rows) == 1 and rows[0]["decision"] in ("normal", "anomalous")
    assert (tmp_path / "overlays").is_dir() and any((tmp_path / "overlays").iterdir())


@pytest.mark.integration
def test_onnx_scorer_refuses_foreign_and_newer_files(onnx_model, tmp_path):
    path, _ = onnx_model
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(OnnxModelError, match="not an ONNX model"):
        OnnxScorer(junk)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(OnnxModelError, match="not one written by 'scgan export'"):
        OnnxScorer(tmp_path / "plain.onnx")
    model = onnx.load(str(path))
    next(p for p in model.metadata_props if p.key == META_FORMAT_VERSION).value = "99"
    onnx.save(model, str(tmp_path / "newer.onnx"))
    with pytest.raises(OnnxModelError, match="newer than this scgan reads"):
        OnnxScorer(tmp_path / "newer.onnx")
    with pytest.raises(ValueError, match=r"expected an image batch of shape \(B, 3, 32, 32\)"):
        OnnxScorer(path).run(np.zeros((1, 3, 16, 16), np.float32))


@pytest.mark.unit
def test_parity_tolerance_is_1e4_near_zero_and_float32_precision_at_large_values():
    from scgan.artifacts.onnx_file import PARITY_ATOL, parity_gap

    at_400 = np.float32(400.0)
    three_ulps = np.nextafter(np.nextafter(np.nextafter(at_400, np.inf), np.inf), np.inf)  # 9.2e-5 above 400
    assert parity_gap(np.array([three_ulps, 1.0 + 0.9 * PARITY_ATOL]), np.array([at_400, 1.0])) is None
    diff, allowed, worst = parity_gap(np.array([400.0, 1.0 + 1.5 * PARITY_ATOL]), np.array([400.0, 1.0]))
    assert worst == 1 and diff == pytest.approx(1.5e-4) and allowed == pytest.approx(1.01e-4)
    assert parity_gap(np.array([400.01]), np.array([400.0])) is not None  # 20 times the tolerance there
    assert parity_gap(np.array([np.nan]), np.array([1.0])) is not None
    assert parity_gap(np.array([np.inf]), np.array([np.inf])) is not None  # not finite on both sides: never within
    shapes = [((0, 3), (1, 3)), ((1, 3), (3, 3)), ((3,), (2,))]  # empty; fewer rows than torch's; another length
    for got, want in ((np.ones(a), np.ones(b)) for a, b in shapes):
        with pytest.raises(ValueError, match="cannot be compared"):
            parity_gap(got, want)


class _Shifted(torch.nn.Module):
    """A scorer whose score is ``scale`` x the image's mean, plus ``shift``: one graph, another torch model."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3)) * self.scale + 400.0 + self.shift)[:, None], x[:, 0]


@pytest.mark.integration
@pytest.mark.parametrize("shift,refused", [(0.0, False), (2e-4, False), (2e-3, True)])
def test_export_parity_check_refuses_a_graph_beyond_the_tolerance_at_the_values_scored(shift, refused):
    """At a score of about 400 (map_z on the check's random images), rounding passes and a real difference fails."""
    from scgan.artifacts.export import _check_parity, _export_graph
    from scgan.data.io import InputSpec

    spec = InputSpec(16)
    data = _export_graph(_Shifted(3.0), spec, None).SerializeToString()
    if refused:
        with pytest.raises(RuntimeError, match=r"scores differ from the torch model's by 0.002\d* \(at most 0.0005"):
            _check_parity(data, _Shifted(3.0, shift), spec)
    else:
        _check_parity(data, _Shifted(3.0, shift), spec)
