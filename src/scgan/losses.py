"""SCGAN losses (SPEC section 2) and our SSIM."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scgan.models.networks import GeneratorOutput


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """Depthwise (C, 1, size, size) normalised Gaussian window."""
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    w = torch.outer(g, g).to(like.dtype)
    return w.expand(channels, 1, size, size).contiguous()


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Per-pixel SSIM of (B, C, H, W) images over valid windows: (B, C, H - ws + 1, W - ws + 1).

    Valid (unpadded) windows give exactly scikit-image's result, which filters with reflection and
    then crops the (ws - 1) / 2 border before averaging.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size} x {window_size} pixels, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    w = _gaussian_window(window_size, sigma, c, x)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # One grouped convolution for all five local statistics.
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), w.repeat(5, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    var_x = e_xx - mu_x**2
    var_y = e_yy - mu_y**2
    cov = e_xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x: torch.Tensor, y: torch.Tensor, **kwargs: float) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1] (Gaussian window 11, sigma 1.5): a scalar tensor."""
    return ssim_map(x, y, **kwargs).mean()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] to [0, 1]."""
    return (x + 1) * 0.5


@dataclass
class LossWeights:
    """alpha_1..alpha_4 of the paper's eq. 10."""

    enc: float = 1.0
    con: float = 40.0
    adv: float = 1.0
    ssim: float = 40.0


@dataclass
class GeneratorLoss:
    """The weighted total and each unweighted term (for logging)."""

    total: torch.Tensor
    enc: torch.Tensor
    con: torch.Tensor
    adv: torch.Tensor
    ssim: torch.Tensor

    def terms(self) -> dict[str, torch.Tensor]:
        return {"total": self.total, "enc": self.enc, "con": self.con, "adv": self.adv, "ssim": self.ssim}


def encoder_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L_enc: mean squared error between the two latents."""
    return F.mse_loss(z2, z1)


def contextual_loss(x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_con: mean absolute error between restoration and target."""
    return F.l1_loss(x_hat, target)


def adversarial_loss(fake_logit: torch.Tensor) -> torch.Tensor:
    """L_adv = -log D(x^): BCE of D's verdict on the restoration against 'real'."""
    return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """GANomaly's adversarial loss: mean squared distance of D's features of x and x^ (real ones detached)."""
    return F.mse_loss(fake_features, real_features.detach())


def ssim_loss(x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_ssim = 1 - SSIM on images mapped from [-1, 1] to [0, 1]."""
    return 1.0 - ssim(to_unit(x_hat), to_unit(target))


def generator_loss(
    out: GeneratorOutput,
    target: torch.Tensor,
    fake_logit: torch.Tensor | None,
    weights: LossWeights,
    adv: torch.Tensor | None = None,
) -> GeneratorLoss:
    """L = a1 L_enc + a2 L_con + a3 L_adv + a4 L_ssim. ``target`` is the clean image (or the augmented one).

    L_adv is -log D(x^) from ``fake_logit``, unless a precomputed ``adv`` (e.g. feature matching) is given.
    """
    enc = encoder_loss(out.z1, out.z2)
    con = contextual_loss(out.x_hat, target)
    if adv is None:
        if fake_logit is None:
            raise ValueError("generator_loss needs fake_logit or a precomputed adv term")
        adv = adversarial_loss(fake_logit)
    # A zero weight skips the SSIM computation (Struc1/Struc3 ablations) but still logs 0.
    s = ssim_loss(out.x_hat, target) if weights.ssim else torch.zeros((), device=target.device)
    total = weights.enc * enc + weights.con * con + weights.adv * adv + weights.ssim * s
    return GeneratorLoss(total=total, enc=enc, con=con, adv=adv, ssim=s)


def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """(BCE(D(x), real) + BCE(D(x^), fake)) / 2."""
    real = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
    fake = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    return 0.5 * (real + fake)
