"""Head-less anomaly maps (1 - SSIM, RIAD's MSGMS), the box filter, and their ONNX export with the head."""
import numpy as np
import pytest
import torch

from scgan.models.scgan.head import SegHead
from scgan.models.scgan.losses import ssim_map, to_unit
from scgan.models.scgan.maps import mean_filter, msgms_map, ssim_anomaly_map

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


def _pair(b: int = 2, s: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image in [-1, 1] and a copy with a 12 x 12 patch at (20, 30) * s / 64 replaced by noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(b, 3, s, s, generator=g) * 2 - 1, 5, 1, 2)
    y = x.clone()
    top, left = 20 * s // 64, 30 * s // 64
    y[:, :, top:top + 12, left:left + 12] = torch.rand(b, 3, 12, 12, generator=g) * 2 - 1
    return x, y


def test_ssim_anomaly_map_shape_zero_and_defect():
    x, y = _pair()
    m = ssim_anomaly_map(x, y)
    assert m.shape == (2, 1, 64, 64)
    assert ssim_anomaly_map(x, x).abs().max() < 1e-5
    assert m[:, :, 22:30, 32:40].mean() > 5 * m[:, :, 45:, :20].mean() and m[:, :, 45:, :20].mean() < 0.01


def test_ssim_anomaly_map_interior_is_ssim_map_and_scikit_image():
    x, y = _pair(1, 48, 1)
    m = ssim_anomaly_map(x, y)
    valid = 1 - ssim_map(to_unit(x), to_unit(y)).mean(1, keepdim=True)  # (1, 1, 38, 38)
    assert torch.allclose(m[:, :, 5:-5, 5:-5], valid, atol=1e-6)
    metrics = pytest.importorskip("skimage.metrics")
    _, full = metrics.structural_similarity(
        to_unit(x)[0].permute(1, 2, 0).double().numpy(), to_unit(y)[0].permute(1, 2, 0).double().numpy(),
        channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, full=True)
    ref = 1 - full.mean(2)  # scikit-image reflects at the border differently (half-sample), so compare inside
    np.testing.assert_allclose(m[0, 0, 5:-5, 5:-5].numpy(), ref[5:-5, 5:-5], atol=1e-4)  # fp32 vs float64


def test_msgms_map_zero_for_identical_positive_on_the_patch():
    x, y = _pair()
    assert msgms_map(x, x).abs().max() < 1e-6
    m = msgms_map(x, y)
    assert m.shape == (2, 1, 64, 64) and m.min() >= 0 and m.max() <= 1
    inside, far = m[:, :, 22:30, 32:40].mean(), m[:, :, 50:, :12].mean()
    assert inside > 0.2 and inside > 10 * far
    # a global brightness change keeps gradients: MSGMS barely moves, unlike a residual
    assert msgms_map(x, (x + 0.1).clamp(-1, 1)).mean() < 0.05
    with pytest.raises(ValueError, match="one"):
        msgms_map(x, y[:, :, :32])
    with pytest.raises(ValueError, match="at least 8"):
        msgms_map(x[:, :, :4, :4], y[:, :, :4, :4])


def test_mean_filter_is_a_box_filter():
    m = torch.zeros(1, 1, 9, 9)
    m[0, 0, 4, 4] = 9.0
    f = mean_filter(m, 3)
    assert f.shape == m.shape and torch.allclose(f[0, 0, 3:6, 3:6], torch.ones(3, 3)) and f.sum() == 9
    assert torch.equal(mean_filter(m, 1), m)
    ones = torch.ones(1, 1, 6, 6)
    assert torch.allclose(mean_filter(ones, 5), ones)  # the border averages only real pixels
    with pytest.raises(ValueError, match="odd"):
        mean_filter(m, 4)


class _TinyScorer(torch.nn.Module):
    """What an exported head model computes: the head's map, MSGMS, and seg_max of the mean-pooled head map."""

    def __init__(self) -> None:
        super().__init__()
        self.head = SegHead(width=4, depth=2)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seg = torch.sigmoid(self.head(x, x_hat))
        score = mean_filter(seg, 5).amax((1, 2, 3))
        return seg, msgms_map(x, x_hat), score + ssim_anomaly_map(x, x_hat).mean((1, 2, 3))


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _TinyScorer().eval()
    x, y = _pair(2, 32)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (x, y), str(path), dynamo=True, input_names=["x", "x_hat"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3, y3 = _pair(2, 32, 5)  # other images than the ones exported with
    got = session.run(None, {"x": x3.numpy(), "x_hat": y3.numpy()})
    with torch.no_grad():
        want = model(x3, y3)
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4)
