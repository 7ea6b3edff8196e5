"""The PatchCore detector's Mahalanobis distance (patchcore.metric=mahalanobis): the whitened bank's Euclidean
distance equals a hand-computed Mahalanobis distance, and a whitened model fits, stores, loads and exports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scgan.models.patchcore.coreset import nearest_distance
from scgan.models.patchcore.model import MemoryBank, whitening_transform


@pytest.mark.unit
@pytest.mark.parametrize("shrinkage", [0.1, 1.0])
def test_the_whitened_distance_is_the_mahalanobis_distance(shrinkage):
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g) * torch.tensor([5.0, 2.0, 1.0, 0.3, 0.1, 0.01])  # very unequal spreads
    patches = torch.randn(500, 6, generator=g) @ mix + 3.0
    mean, w = whitening_transform(patches, shrinkage)
    # By hand, in float64: S = (1 - s) C + s tr(C) / D I, d(q, b) = sqrt((q - b)^T S^-1 (q - b)), min over the bank.
    p = patches.double().numpy()
    c = np.cov(p, rowvar=False)
    s = (1 - shrinkage) * c + shrinkage * np.trace(c) / 6 * np.eye(6)
    inv = np.linalg.inv(s)
    bank_rows, queries = p[:40], torch.randn(9, 6, generator=g).double().numpy() @ mix.double().numpy() + 3.0
    expected = [min(np.sqrt((q - b) @ inv @ (q - b)) for b in bank_rows) for q in queries]
    memory = MemoryBank((torch.from_numpy(bank_rows).float() - mean) @ w, whitening=(mean, w))
    got = nearest_distance(memory.project(torch.from_numpy(queries).float()), memory.bank,
                           memory.bank.pow(2).sum(1))
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-3)
    if shrinkage == 1.0:  # all shrinkage: a scaled Euclidean distance, whatever the covariance's shape
        eu = [min(np.linalg.norm(q - b) for b in bank_rows) for q in queries]
        np.testing.assert_allclose(got.numpy(), np.array(eu) / np.sqrt(np.trace(c) / 6), rtol=2e-3)


@pytest.mark.unit
def test_the_metric_and_its_shrinkage_are_checked():
    from scgan.config import load_config

    with pytest.raises(ValueError, match="patchcore.metric must be one of euclidean, mahalanobis"):
        load_config("default", overrides=["patchcore.metric=cosine"])
    with pytest.raises(ValueError, match=r"patchcore.shrinkage must be in \(0, 1\]"):
        load_config("default", overrides=["patchcore.shrinkage=0"])


@pytest.mark.integration
def test_a_whitened_model_fits_loads_and_exports(tmp_path, demo_root, demo_category):
    from conftest import TINY_FEATURES
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.model_file import load_model
    from scgan.config import load_config
    from scgan.inference.detector import Detector
    from scgan.training.fit import train

    cfg = load_config("default", overrides={**TINY_FEATURES, "patchcore.metric": "mahalanobis",
                                            "data.root": str(demo_root), "data.category": demo_category})
    res = train(cfg, tmp_path / "fit", progress=False)
    loaded = load_model(res.model_path)
    memory = loaded.parts["memory"]
    assert memory.whitened and memory.whitening.shape == (memory.bank.shape[1],) * 2
    image = np.full((64, 64, 3), 128, np.uint8)
    image[20:30, 20:30] = 250
    torch_score = Detector.load(res.model_path).predict(image).score
    onnx_score = Detector.load(export_onnx(res.model_path, tmp_path / "m.onnx")).predict(image).score
    assert onnx_score == pytest.approx(torch_score, rel=1e-4)


@pytest.mark.integration
def test_mirror_padding_takes_a_sliver_of_an_image(tmp_path, demo_root, demo_category):
    """patchcore.pad mirrors the image beyond its borders: an image far longer than wide is brought to sides longer
    than the pad (mirroring needs them) and scores."""
    from conftest import TINY_FEATURES
    from scgan.config import load_config
    from scgan.inference.detector import Detector
    from scgan.training.fit import train

    cfg = load_config("default", overrides={**TINY_FEATURES, "patchcore.pad": 16, "data.root": str(demo_root),
                                            "data.category": demo_category})
    res = train(cfg, tmp_path / "fit", progress=False)
    detector = Detector.load(res.model_path)
    assert detector.spec.min_side == 32 and detector.spec.shape(20, 640) == (32, 256)
    result = detector.predict(np.full((20, 640, 3), 120, np.uint8))
    assert np.isfinite(result.score) and result.original_size == (20, 640) and result.anomaly_map.shape == (32, 256)
    with pytest.raises(ValueError, match="patchcore.pad must be a multiple of 16"):
        from scgan.models.checks import check_config

        check_config(load_config("default", overrides=["patchcore.pad=8"]))
