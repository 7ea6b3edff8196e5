"""Shapes, structure, init and gradients of the SCGAN networks (SPEC section 1)."""
import pytest
import torch
from torch import nn

from scgan import MSCAM, Discriminator, Generator
from scgan.models.scgan.losses import LossWeights, adversarial_loss, discriminator_loss, generator_loss
from scgan.models.scgan.networks import Encoder, weights_init

pytestmark = pytest.mark.unit

SMALL = dict(base_channels=8, max_channels=32)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes(size):
    g = Generator(image_size=size, nz=16, **SMALL)
    d = Discriminator(image_size=size, **SMALL)
    x = torch.randn(2, 3, size, size)
    out = g(x)
    assert out.x_hat.shape == x.shape
    assert out.z1.shape == (2, 16, 1, 1) and out.z2.shape == (2, 16, 1, 1)
    assert out.x_hat.abs().max() <= 1.0
    dout = d(x)
    assert dout.prob.shape == (2,)
    assert ((dout.prob > 0) & (dout.prob < 1)).all()
    assert dout.features.shape[0] == 2 and dout.features.shape[-2:] == (4, 4)


def _main_convs(enc: Encoder) -> list[nn.Conv2d]:
    """Convolutions of the main path, not those inside MS-CAM."""
    convs = []
    for block in enc.blocks:
        convs += [m for m in block if isinstance(m, nn.Conv2d)]
    return convs + [enc.final]


def test_paper_layout_at_256():
    g = Generator(image_size=256, attention=True, **SMALL)
    assert len(_main_convs(g.encoder1)) == 7
    assert len(_main_convs(g.encoder2)) == 7
    assert sum(isinstance(m, MSCAM) for m in g.encoder1.modules()) == 6
    assert all(isinstance(block[-1], MSCAM) for block in g.encoder1.blocks)
    assert not any(isinstance(m, MSCAM) for m in g.encoder2.modules())
    ups = [m for m in g.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 7
    assert isinstance(list(g.decoder.modules())[-1], nn.Tanh)


def test_uncapped_channels_follow_ganomaly():
    g = Generator(image_size=256, base_channels=64, max_channels=None, attention=False)
    assert g.encoder1.final.in_channels == 64 * 2**5  # 2048 at S = 256
    capped = Generator(image_size=256, base_channels=64, max_channels=512, attention=False)
    assert capped.encoder1.final.in_channels == 512


def test_attention_off_matches_encoder2_structure():
    g = Generator(image_size=64, attention=False, **SMALL)
    s1 = [(n, tuple(p.shape)) for n, p in g.encoder1.named_parameters()]
    s2 = [(n, tuple(p.shape)) for n, p in g.encoder2.named_parameters()]
    assert s1 == s2
    assert str(g.encoder1) == str(g.encoder2)


def test_mscam_matches_hand_computation():
    torch.manual_seed(0)
    m = MSCAM(8, reduction=4).eval()
    # Give BatchNorm non-trivial running statistics so eval mode is a real affine map.
    for bn in [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 8, 5, 5)

    def bn(layer, t):
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        shift = layer.bias[None, :, None, None]
        return (t - layer.running_mean[None, :, None, None]) * scale[None, :, None, None] + shift

    def pw(conv, t):  # 1x1 convolution as a matrix product
        w = conv.weight[:, :, 0, 0]
        assert conv.bias is None  # BatchNorm follows, so a bias would be dead weight
        return torch.einsum("oc,bchw->bohw", w, t)

    la = m.local_att
    local = bn(la[4], pw(la[3], torch.relu(bn(la[1], pw(la[0], x)))))
    ga = m.global_att
    pooled = x.mean(dim=(2, 3), keepdim=True)
    glob = bn(ga[5], pw(ga[4], torch.relu(bn(ga[2], pw(ga[1], pooled)))))
    expected = x * torch.sigmoid(local + glob)
    with torch.no_grad():
        assert torch.allclose(m(x), expected, atol=1e-6)


def test_mscam_rejects_bad_arguments():
    with pytest.raises(ValueError):
        MSCAM(0)


def test_bad_image_size():
    for bad in (48, 16, 100):
        with pytest.raises(ValueError, match="power of two"):
            Generator(image_size=bad)


def test_weight_init_statistics():
    torch.manual_seed(0)
    g = Generator(image_size=64, base_channels=32, max_channels=256)
    g.apply(weights_init)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3
    assert abs(w.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 5e-3 and abs(bn.std().item() - 0.02) < 5e-3


def test_one_step_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    g = Generator(image_size=32, nz=8, **SMALL)
    d = Discriminator(image_size=32, **SMALL)
    g.apply(weights_init)
    d.apply(weights_init)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    x_aug = x.flip(-1)
    out = g(x_aug)
    gl = generator_loss(out, x, adversarial_loss(d(out.x_hat).logit), LossWeights())
    gl.total.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    d.zero_grad()
    dl = discriminator_loss(d(x).logit, d(out.x_hat.detach()).logit)
    dl.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_output_scale_widens_the_range_and_reaches_saturated_pixels():
    torch.manual_seed(0)
    plain = Generator(image_size=32, nz=8, **SMALL)
    scaled = Generator(image_size=32, nz=8, output_scale=1.1, **SMALL)
    scaled.load_state_dict(plain.state_dict())  # no new parameters: old checkpoints load unchanged
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), scaled.eval()
    a, b = plain(x).x_hat, scaled(x).x_hat
    torch.testing.assert_close(b, 1.1 * a)
    assert a.abs().max() <= 1.0 and b.abs().max() <= 1.1 + 1e-6
    # a latent far from zero saturates the Tanh: the scaled decoder then goes past +-1, the plain one cannot
    z = torch.randn(2, 8, 1, 1) * 1e3
    with torch.no_grad():
        assert plain.decoder(z).abs().max() <= 1.0 < scaled.decoder(z).abs().max() <= 1.1 + 1e-6


@pytest.mark.parametrize("bad", [0.5, 0.99, 2.5])
def test_output_scale_out_of_range(bad):
    with pytest.raises(ValueError, match="output_scale"):
        Generator(image_size=32, nz=8, output_scale=bad, **SMALL)
