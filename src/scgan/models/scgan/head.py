"""A learned anomaly head (DRAEM's discriminative network, small): a U-Net on (input, restoration) -> logit map."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from scgan.models.scgan.networks import init_weights

if TYPE_CHECKING:
    from scgan.config import ModelConfig


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU; the size is kept."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SegHead(nn.Module):
    """U-Net on concat(x, x_hat): (B, 3, S, S) twice -> anomaly logits (B, 1, S, S) at the input's size.

    ``depth`` max-pool levels below the input, channels ``width`` * 2^level; each level up is a 2x2
    stride-2 transposed convolution, the skip connection of its level, and a conv block. H and W must
    be divisible by 2^depth. Weights start as DCGAN's (conv ~ N(0, 0.02), BatchNorm weight ~ N(1, 0.02)).
    """

    def __init__(self, in_channels: int = 6, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"SegHead needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] + [_block(a, b) for a, b in zip(chans, chans[1:])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(chans, chans[1:])])
        self.merge = nn.ModuleList([_block(2 * a, a) for a in chans[:-1]])
        self.out = nn.Conv2d(chans[0], 1, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) that each pixel is anomalous, from x and its restoration x_hat (B, 3, H, W)."""
        h, w = x.shape[-2:]
        step = 2**self.depth
        if h % step or w % step:
            raise ValueError(f"SegHead of depth {self.depth} needs H and W divisible by {step}, got {h} x {w}; "
                             f"resize the images or lower head_depth")
        feats = self.down[0](torch.cat([x, x_hat], dim=1))
        skips = []
        for block in self.down[1:]:
            skips.append(feats)
            feats = block(self.pool(feats))
        for up, merge, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips)):
            feats = merge(torch.cat([up(feats), skip], dim=1))
        return self.out(feats)


def build_head(m: ModelConfig) -> SegHead | None:
    """The learned anomaly head a model config describes (None for ``head = none``, the paper's SCGAN)."""
    if m.head == "none":
        return None
    return SegHead(in_channels=6, width=m.head_width, depth=m.head_depth)
