"""Our SSIM against scikit-image, and the loss terms."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from scgan import ssim
from scgan.models.scgan.losses import LossWeights, adversarial_loss, discriminator_loss, generator_loss
from scgan.models.scgan.networks import GeneratorOutput

pytestmark = pytest.mark.unit


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    vals = [
        structural_similarity(
            a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2,
        )
        for a, b in zip(x, y)
    ]
    return float(np.mean(vals))


def test_ssim_matches_skimage_on_random_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 48, generator=g, dtype=torch.float64)
    y = torch.rand(3, 3, 40, 48, generator=g, dtype=torch.float64)
    assert abs(ssim(x, y).item() - _skimage_ssim(x, y)) < 1e-4


def test_ssim_matches_skimage_on_smooth_image_with_noise():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx), 0.5 + 0.4 * torch.cos(4 * yy), 0.3 + 0.5 * xx * yy])
    x = base[None].double()
    g = torch.Generator().manual_seed(1)
    y = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(x, y).item()
    assert 0.3 < ours < 0.99  # a meaningful, non-trivial value
    assert abs(ours - _skimage_ssim(x, y)) < 1e-4


def test_ssim_identity_and_float32():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, 1 - x).item() < 0.5


def test_ssim_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 16))


def _out(x_hat, z1, z2):
    return GeneratorOutput(x_hat=x_hat, z1=z1, z2=z2)


def test_generator_loss_terms_and_weights():
    x = torch.zeros(2, 3, 32, 32)
    x_hat = torch.full_like(x, 0.5)
    z1, z2 = torch.zeros(2, 4, 1, 1), torch.full((2, 4, 1, 1), 2.0)
    logit = torch.zeros(2)  # D says 0.5
    loss = generator_loss(_out(x_hat, z1, z2), x, adversarial_loss(logit), LossWeights(enc=1, con=40, adv=1, ssim=40))
    assert loss.enc.item() == pytest.approx(4.0)
    assert loss.con.item() == pytest.approx(0.5)
    assert loss.adv.item() == pytest.approx(np.log(2), rel=1e-5)
    expected = 4.0 + 40 * 0.5 + np.log(2) + 40 * loss.ssim.item()
    assert loss.total.item() == pytest.approx(expected, rel=1e-5)
    no_ssim = generator_loss(_out(x_hat, z1, z2), x, adversarial_loss(logit), LossWeights(ssim=0))
    assert no_ssim.ssim.item() == 0.0


def test_discriminator_loss():
    big = torch.full((3,), 20.0)
    assert discriminator_loss(big, -big).item() < 1e-6  # confident and right
    assert discriminator_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(np.log(2), rel=1e-5)


def test_feature_matching_loss_detaches_real_features():
    from scgan.models.scgan.losses import feature_matching_loss

    real = torch.ones(2, 4, 4, 4, requires_grad=True)
    fake = torch.zeros(2, 4, 4, 4, requires_grad=True)
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert real.grad is None and fake.grad is not None and fake.grad.abs().sum() > 0


def test_generator_loss_takes_the_adversarial_term_it_is_given():
    x = torch.zeros(1, 3, 32, 32)
    out = _out(x.clone(), torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))
    loss = generator_loss(out, x, torch.tensor(3.0), LossWeights(adv=2.0))
    assert loss.adv.item() == 3.0 and loss.total.item() == pytest.approx(6.0, abs=1e-5)
