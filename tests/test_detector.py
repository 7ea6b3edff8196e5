"""scgan.Detector: one API over torch and ONNX models; inputs of every kind score alike; maps at the input's size."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import scgan
from scgan.data.io import ImageReadError
from scgan.inference.detector import Detector, InputError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def torch_det(trained):
    return scgan.Detector.load(trained[0].model_path)


@pytest.fixture(scope="module")
def onnx_det(exported_onnx):
    return scgan.Detector.load(exported_onnx)


@pytest.fixture(scope="module")
def test_images(demo_root, demo_category):
    files = sorted((demo_root / demo_category / "test").rglob("*.png"))
    return files[:: max(1, len(files) // 5)][:5]


def _non_square(path, h=37, w=53) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))


def test_path_pil_numpy_and_bytes_give_the_same_scores(torch_det, test_images, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_non_square(test_images[0])).save(path)
    arr = np.asarray(Image.open(path))
    inputs = {"path": str(path), "pathlib": path, "pil": Image.open(path), "uint8": arr,
              "float": arr.astype(np.float64) / 255.0, "bytes": path.read_bytes(),
              "gray-as-rgb-alpha": np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])}
    results = {k: torch_det.predict(v) for k, v in inputs.items()}
    ref = results["path"]
    assert ref.source == str(path) and set(ref.scores) == set(torch_det.score_names)
    for name, r in results.items():
        assert r.scores == ref.scores, name  # bit-identical: one reading path for every kind of input
        np.testing.assert_array_equal(r.heat, ref.heat)


def test_heat_map_has_the_input_resolution_for_non_square_images(torch_det, onnx_det, test_images):
    img = _non_square(test_images[1], 37, 53)
    for det in (torch_det, onnx_det):
        r = det.predict(img)
        assert r.heat.shape == (37, 53) and r.heat.dtype == np.float32
        assert 0.0 <= r.heat.min() <= r.heat.max() <= 1.0
        assert r.original_size == (37, 53) and r.overlay().size == (53, 37)
        assert r.decision in ("normal", "anomalous") and r.threshold == det.threshold
        assert r.anomalous == (r.score > r.threshold)


def test_torch_and_onnx_detectors_agree(torch_det, onnx_det, test_images):
    a = torch_det.predict(list(test_images))
    b = onnx_det.predict(list(test_images))
    assert torch_det.score_names == onnx_det.score_names and torch_det.default_score == onnx_det.default_score
    for ra, rb in zip(a, b):
        for name in torch_det.score_names:
            assert abs(ra.scores[name] - rb.scores[name]) <= 1e-4, name
        assert np.abs(ra.heat - rb.heat).max() <= 1e-4
        assert abs(ra.normalized - rb.normalized) <= 1e-4 and ra.threshold == pytest.approx(rb.threshold)


def test_a_list_is_batched_and_keeps_its_order(torch_det, test_images):
    one_by_one = [torch_det.predict(p).scores for p in test_images]
    batched = [r.scores for r in torch_det.predict(list(test_images), batch_size=2)]
    for a, b in zip(one_by_one, batched):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_one_clear_error_and_iter_predict_skips_them(torch_det, test_images, tmp_path):
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        torch_det.predict(np.full((8, 8, 3), 200.0))
    with pytest.raises(InputError, match="shape"):
        torch_det.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(InputError, match="cannot score a dict"):
        torch_det.predict({"x": 1})
    with pytest.raises(ImageReadError, match="cannot read image"):
        torch_det.predict(b"not an image")
    items = [test_images[0], b"junk", np.zeros((5, 5), np.int64), test_images[1]]
    outcomes = list(torch_det.iter_predict(items, batch_size=3))
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.result is None for o in outcomes] == [False, True, True, False]
    assert "uint8" in outcomes[2].error and "\n" not in outcomes[1].error


def test_big_inputs_are_reduced_before_scoring(trained, test_images):
    det = Detector.load(trained[0].model_path, max_side=64)
    big = np.asarray(Image.open(test_images[0]).convert("RGB").resize((300, 200)))
    r = det.predict(big)
    assert r.original_size == (200, 300) and max(r.image.shape[:2]) <= 64 and r.heat.shape == r.image.shape[:2]


def test_model_description_takes_score_names_from_the_model(torch_det, onnx_det):
    for det in (torch_det, onnx_det):
        d = det.describe()
        assert d["score_names"] == list(det.score_names) and d["default_score"] in d["score_names"]
        assert d["image_size"] == det.image_size and d["calibration"]["threshold"] == det.threshold
        assert d["backend"] in ("torch", "onnx") and d["version"] == scgan.__version__


def test_onnx_detector_imports_no_torch(exported_onnx, test_images):
    """In a fresh interpreter: load an ONNX model and score an image; torch is never imported."""
    code = textwrap.dedent(f"""
        import sys
        import scgan
        det = scgan.Detector.load({str(exported_onnx)!r})
        r = det.predict({str(test_images[0])!r})
        r.overlay(); r.heat
        assert "torch" not in sys.modules, "torch was imported"
        assert "lightning" not in sys.modules, "lightning was imported"
        print(r.decision)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() in ("normal", "anomalous")
