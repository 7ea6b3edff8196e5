"""The learned anomaly head: SegHead's shapes, gradients and size errors; focal loss against its formula."""
import numpy as np
import pytest
import torch

from scgan.models.scgan.head import SegHead
from scgan.models.scgan.losses import focal_loss

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_seghead_output_shape(size):
    head = SegHead(width=4, depth=3)
    x = torch.rand(2, 3, size, size) * 2 - 1
    out = head(x, x.flip(-1))
    assert out.shape == (2, 1, size, size) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_seghead_non_square_and_depth():
    out = SegHead(width=4, depth=2)(torch.zeros(1, 3, 24, 40), torch.zeros(1, 3, 24, 40))
    assert out.shape == (1, 1, 24, 40)
    big, small = SegHead(width=4, depth=4), SegHead(width=4, depth=2)
    assert sum(p.numel() for p in big.parameters()) > 4 * sum(p.numel() for p in small.parameters())


def test_seghead_gradients_reach_every_parameter():
    torch.manual_seed(0)
    head = SegHead(width=4, depth=3)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    target = torch.zeros(4, 1, 32, 32)
    target[:, :, 8:16, 8:16] = 1
    focal_loss(head(x, torch.rand_like(x)), target).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_seghead_rejects_bad_sizes():
    head = SegHead(depth=3)
    with pytest.raises(ValueError, match="divisible by 8"):
        head(torch.zeros(1, 3, 36, 36), torch.zeros(1, 3, 36, 36))
    with pytest.raises(ValueError, match="width >= 1"):
        SegHead(width=0)


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    z, t = logits.numpy().astype(np.float64), target.numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    p_t = np.where(t == 1, p, 1 - p)
    for gamma, alpha in [(2.0, None), (2.0, 0.25), (0.5, 0.75)]:
        a_t = 1.0 if alpha is None else np.where(t == 1, alpha, 1 - alpha)
        expected = np.mean(-a_t * (1 - p_t) ** gamma * np.log(p_t))
        got = focal_loss(logits, target, gamma=gamma, alpha=alpha)
        assert got.shape == () and abs(got.item() - expected) < 1e-6, (gamma, alpha, got.item(), expected)


def test_focal_loss_gamma_zero_is_bce_and_stable():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g) * 5
    target = torch.rand(2, 1, 8, 8, generator=g) < 0.3
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float())
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), bce, atol=1e-7)
    # confident and right: ~0; confident and wrong: large but finite
    huge = torch.full((1, 1, 2, 2), 200.0)
    assert focal_loss(huge, torch.ones_like(huge)).item() < 1e-30
    assert torch.isfinite(focal_loss(huge, torch.zeros_like(huge))) and focal_loss(huge, torch.zeros_like(huge)) > 100
    # focusing: an easy pixel counts for less than under BCE
    assert focal_loss(logits, target) < bce
    with pytest.raises(ValueError, match="one shape"):
        focal_loss(logits, target[:, :, :4])


def test_focal_loss_is_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    target = torch.rand(2, 1, 8, 8, generator=g) < 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = focal_loss(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - focal_loss(logits.bfloat16().float(), target).item()) < 1e-7
