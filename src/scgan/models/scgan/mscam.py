"""Multi-scale channel attention (MS-CAM) from Attentional Feature Fusion (Dai et al., WACV 2021)."""
from __future__ import annotations

import torch
from torch import nn


def _pointwise_bottleneck(channels: int, inter: int, norm: type[nn.Module]) -> nn.Sequential:
    """PWConv(C -> C/r) -> BN -> ReLU -> PWConv(C/r -> C) -> BN (no conv bias: BN would cancel it)."""
    return nn.Sequential(
        nn.Conv2d(channels, inter, kernel_size=1, bias=False),
        norm(inter),
        nn.ReLU(inplace=True),
        nn.Conv2d(inter, channels, kernel_size=1, bias=False),
        norm(channels),
    )


class MSCAM(nn.Module):
    """X' = X * sigmoid(L(X) + G(X)): local (per-pixel) plus global (pooled) channel attention.

    Input and output are (B, C, H, W). ``reduction`` is r in the paper (C -> C/r in the bottleneck).
    The global branch's BatchNorm sees a 1 x 1 map, so training needs batches of more than one image.
    """

    def __init__(self, channels: int, reduction: int = 4, norm: type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"MSCAM needs channels >= 1 and reduction >= 1, got {channels}, {reduction}")
        inter = max(channels // reduction, 1)
        self.local_att = _pointwise_bottleneck(channels, inter, norm)
        self.global_att = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_pointwise_bottleneck(channels, inter, norm))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights in (0, 1), shape (B, C, H, W)."""
        return torch.sigmoid(self.local_att(x) + self.global_att(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
