"""SCGAN losses (SPEC section 2), our SSIM, and the registries of adversarial losses and restoration targets.

Every loss is computed in fp32, also under autocast: SSIM's E[x^2] - mu^2 in bf16 cancels to noise (on demo
images the bf16 SSIM loss went negative and its gradient pointed elsewhere).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scgan.models.scgan.networks import DiscriminatorOutput, GeneratorOutput


def fp32(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run ``fn`` with autocast off and its floating tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        def up(v):
            return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v

        args = tuple(up(a) for a in args)
        kwargs = {k: up(v) for k, v in kwargs.items()}
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """Depthwise (C, 1, size, size) normalised Gaussian window."""
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    w = torch.outer(g, g).to(like.dtype)
    return w.expand(channels, 1, size, size).contiguous()


@fp32
def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
    same_size: bool = False,
) -> torch.Tensor:
    """Per-pixel SSIM of (B, C, H, W) images over valid windows: (B, C, H - ws + 1, W - ws + 1).

    Valid (unpadded) windows give exactly scikit-image's result, which filters with reflection and
    then crops the (ws - 1) / 2 border before averaging. ``same_size`` reflect-pads both images by
    (ws - 1) / 2 first, for a (B, C, H, W) map (an anomaly map); its interior is the valid map.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size} x {window_size} pixels, "
                         f"got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    if same_size:
        if window_size % 2 == 0:
            raise ValueError(f"a same-size ssim map needs an odd window_size, got {window_size}")
        pad = [(window_size - 1) // 2] * 4
        x, y = F.pad(x, pad, mode="reflect"), F.pad(y, pad, mode="reflect")
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


@fp32
def encoder_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L_enc: mean squared error between the two latents."""
    return F.mse_loss(z2, z1)


@fp32
def contextual_loss(x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_con: mean absolute error between restoration and target."""
    return F.l1_loss(x_hat, target)


@fp32
def adversarial_loss(fake_logit: torch.Tensor) -> torch.Tensor:
    """L_adv = -log D(x^): BCE of D's verdict on the restoration against 'real'."""
    return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))


@fp32
def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """GANomaly's adversarial loss: mean squared distance of D's features of x and x^ (real ones detached)."""
    return F.mse_loss(fake_features, real_features.detach())


@fp32
def ssim_loss(x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_ssim = 1 - SSIM on images mapped from [-1, 1] to [0, 1]."""
    return 1.0 - ssim(to_unit(x_hat), to_unit(target))


@dataclass(frozen=True)
class AdversarialLoss:
    """G's adversarial term from D's outputs on the restoration (``fake``) and, if ``needs_real``, on x."""

    fn: Callable[[DiscriminatorOutput | None, DiscriminatorOutput], torch.Tensor]
    needs_real: bool


ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    # The paper's L_adv = -log D(x^) (SPEC section 2).
    "bce": AdversarialLoss(lambda real, fake: adversarial_loss(fake.logit), needs_real=False),
    # GANomaly's feature matching: D's last feature map of x^ pulled towards that of x.
    "feature": AdversarialLoss(lambda real, fake: feature_matching_loss(real.features, fake.features),
                               needs_real=True),
}

# What L_con and L_ssim compare the restoration with: (clean x, augmented x~) -> target.
RESTORATION_TARGETS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "clean": lambda x, x_aug: x,  # restore the normal image from the pasted one (the paper's Fig. 2)
    "augmented": lambda x, x_aug: x_aug,  # plain reconstruction of the input
}


def adversarial_term(adv_type: str, real: DiscriminatorOutput | None, fake: DiscriminatorOutput) -> torch.Tensor:
    """G's adversarial loss called ``adv_type`` (an ADVERSARIAL_LOSSES key)."""
    if adv_type not in ADVERSARIAL_LOSSES:
        raise ValueError(f"unknown adv_type {adv_type!r}; valid: {', '.join(ADVERSARIAL_LOSSES)}")
    entry = ADVERSARIAL_LOSSES[adv_type]
    if entry.needs_real and real is None:
        raise ValueError(f"adv_type {adv_type!r} needs D's output on the real images")
    return entry.fn(real, fake)


def generator_loss(out: GeneratorOutput, target: torch.Tensor, adv: torch.Tensor,
                   weights: LossWeights) -> GeneratorLoss:
    """L = a1 L_enc + a2 L_con + a3 L_adv + a4 L_ssim, in fp32. ``target`` is the clean image (or the augmented one);
    ``adv`` is the adversarial term (:func:`adversarial_term`)."""
    enc = encoder_loss(out.z1, out.z2)
    con = contextual_loss(out.x_hat, target)
    adv = adv.float()
    # A zero weight skips the SSIM computation (Struc1/Struc3 ablations) but still logs 0.
    s = ssim_loss(out.x_hat, target) if weights.ssim else torch.zeros((), device=target.device)
    total = weights.enc * enc + weights.con * con + weights.adv * adv + weights.ssim * s
    return GeneratorLoss(total=total, enc=enc, con=con, adv=adv, ssim=s)


@fp32
def discriminator_loss(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """(BCE(D(x), real) + BCE(D(x^), fake)) / 2."""
    real = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
    fake = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    return 0.5 * (real + fake)


@fp32
def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Focal loss (Lin et al.) of logits against a {0, 1} mask of one shape, e.g. (B, 1, S, S): the pixel mean.

    FL = -alpha_t (1 - p_t)^gamma log p_t, with p_t the predicted probability of the true class and
    alpha_t = alpha on anomalous pixels, 1 - alpha on normal ones (no weighting when alpha is None);
    gamma = 0 and no alpha is plain BCE. log p_t comes from BCE-with-logits, so large logits stay finite.
    """
    if logits.shape != target.shape:
        raise ValueError(f"focal_loss needs logits and target of one shape, got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    target = target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # -log p_t
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = (1 - p_t) ** gamma * ce
    if alpha is not None:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()
