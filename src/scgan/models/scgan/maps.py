"""Head-less anomaly maps from an image and its restoration, both (B, 3, S, S) in [-1, 1] -> (B, 1, S, S).

``ssim_anomaly_map`` is 1 - SSIM and ``msgms_map`` RIAD's multi-scale gradient magnitude similarity
(Zavrtanik et al., Pattern Recognition 2021), the two head-less scores of DRAEM's ablation; ``mean_filter``
is the box filter that DRAEM's seg_max (mean-pool, then max) and RIAD's smoothing use. All are plain
tensor ops without data-dependent control flow, so they export to ONNX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scgan.models.scgan.losses import fp32, ssim_map, to_unit

_GMS_C = 0.0026  # RIAD's (and GMSD's) stability constant, for images in [0, 1]
_PREWITT = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape != x_hat.shape:
        raise ValueError(f"anomaly maps need an image and its restoration of one (B, C, H, W) shape, "
                         f"got {tuple(x.shape)} and {tuple(x_hat.shape)}")


def ssim_anomaly_map(x: torch.Tensor, x_hat: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - SSIM (Gaussian window, on [0, 1] images), averaged over channels: (B, 1, S, S), 0 where identical.

    The border uses reflect padding (``ssim_map(..., same_size=True)``); the interior is the usual SSIM.
    """
    _check_pair(x, x_hat)
    s = ssim_map(to_unit(x), to_unit(x_hat), window_size=window_size, sigma=sigma, same_size=True)
    return 1.0 - s.mean(1, keepdim=True)


def _gradient_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude of (B, 1, H, W), replicate-padded: (B, 1, H, W)."""
    k = _PREWITT.to(grey.device, grey.dtype)
    kernels = torch.stack([k, k.t()])[:, None]  # (2, 1, 3, 3): horizontal and vertical
    g = F.conv2d(F.pad(grey, [1, 1, 1, 1], mode="replicate"), kernels)
    return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2)


@fp32
def msgms_map(x: torch.Tensor, x_hat: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """RIAD's 1 - MSGMS: (B, 1, S, S) in [0, 1], 0 where identical.

    Per scale 1, 1/2, 1/4, 1/8 (2x2 average pooling): grey images (channel mean, in [0, 1]), their
    Prewitt gradient magnitudes g1, g2, GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c) with c = 0.0026; each
    1 - GMS is bilinearly upsampled to S and the map is their mean. RIAD pads the gradient filter with
    zeros, which turns every border pixel into an edge of both images and hides defects there; we pad
    by replication instead.
    """
    _check_pair(x, x_hat)
    size = x.shape[-2:]
    if min(size) < 2 ** (scales - 1):
        raise ValueError(f"msgms_map with {scales} scales needs images of at least {2 ** (scales - 1)} px, "
                         f"got {tuple(size)}")
    a, b = to_unit(x).mean(1, keepdim=True), to_unit(x_hat).mean(1, keepdim=True)
    total = torch.zeros_like(a)
    for scale in range(scales):
        if scale:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        g1, g2 = _gradient_magnitude(a), _gradient_magnitude(b)
        gms = (2 * g1 * g2 + _GMS_C) / (g1**2 + g2**2 + _GMS_C)
        total = total + F.interpolate(1 - gms, size=size, mode="bilinear", align_corners=False)
    return total / scales


def mean_filter(anomaly_map: torch.Tensor, size: int) -> torch.Tensor:
    """Box filter of (B, C, H, W) with an odd ``size`` window, same size out; the border averages what it covers."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"mean_filter needs an odd window size >= 1, got {size}")
    if size == 1:
        return anomaly_map
    return F.avg_pool2d(anomaly_map, size, stride=1, padding=size // 2, count_include_pad=False)
