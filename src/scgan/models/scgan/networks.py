"""Encoder, decoder, generator (encoder1 -> decoder -> encoder2) and discriminator (SPEC section 1).

The layout is GANomaly's DCGAN one: 4x4 stride-2 convolutions halve the map until it is 4 x 4, then a
4x4 valid convolution gives the 1 x 1 latent. At S = 256 that is 7 convolutions down and 7 up.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from scgan.models.scgan.mscam import MSCAM

if TYPE_CHECKING:
    from scgan.config import ModelConfig


def check_image_size(image_size: int) -> int:
    """Return log2(image_size) after checking it is a power of two >= 32."""
    if not isinstance(image_size, int) or image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 32 (32, 64, 128, 256, ...), got {image_size!r}")
    return int(math.log2(image_size))


def channel_plan(image_size: int, base_channels: int, max_channels: int | None) -> list[int]:
    """Channels of each stride-2 block, from the first (full resolution / 2) to the 4 x 4 one."""
    n_down = check_image_size(image_size) - 2
    if base_channels < 1:
        raise ValueError(f"base_channels must be >= 1, got {base_channels}")
    if max_channels is not None and max_channels < 1:
        raise ValueError(f"max_channels must be >= 1 or None (uncapped), got {max_channels}")
    chans = [base_channels * 2**i for i in range(n_down)]
    return [min(c, max_channels) if max_channels else c for c in chans]


class Encoder(nn.Module):
    """Image (B, in_channels, S, S) -> latent (B, out_channels, 1, 1), optionally with MS-CAM after each block."""

    def __init__(self, image_size: int = 256, out_channels: int = 100, in_channels: int = 3, base_channels: int = 64,
                 max_channels: int | None = None, attention: bool = False, reduction: int = 4) -> None:
        super().__init__()
        chans = channel_plan(image_size, base_channels, max_channels)
        blocks: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [nn.Conv2d(prev, c, 4, 2, 1, bias=False)]
            if i > 0:  # DCGAN: no BatchNorm on the first block
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if attention:
                layers.append(MSCAM(c, reduction))
            blocks.append(nn.Sequential(*layers))
            prev = c
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Conv2d(prev, out_channels, 4, 1, 0, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial map, (B, C_last, 4, 4)."""
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.features(x))


class Decoder(nn.Module):
    """Latent (B, nz, 1, 1) -> image (B, out_channels, S, S) in [-output_scale, output_scale]; mirrors the encoder.

    The output is ``output_scale * tanh(.)``. With SPEC's plain Tanh (1.0) a saturated pixel (pure white or
    black, +-1) is only reached as the pre-activation goes to infinity, so such pixels keep a residual that
    shrinks slowly with training; a scale a little above 1 (range [-scale, scale]) lets training close it sooner.
    """

    def __init__(self, image_size: int = 256, nz: int = 100, out_channels: int = 3, base_channels: int = 64,
                 max_channels: int | None = None, output_scale: float = 1.0) -> None:
        super().__init__()
        if not 1.0 <= output_scale <= 2.0:
            raise ValueError(f"output_scale must be in [1, 2], got {output_scale!r}")
        self.output_scale = float(output_scale)
        chans = channel_plan(image_size, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, chans[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        # output_scale > 1 lets the restoration reach +-1 (white or black pixels) at a finite pre-activation.
        return out if self.output_scale == 1.0 else out * self.output_scale


@dataclass
class GeneratorOutput:
    """What the generator returns: the restored image and both latents."""

    x_hat: torch.Tensor  # (B, 3, S, S) in [-output_scale, output_scale] ([-1, 1] with SPEC's plain Tanh)
    z1: torch.Tensor  # (B, nz, 1, 1) from encoder1 (the input)
    z2: torch.Tensor  # (B, nz, 1, 1) from encoder2 (the restoration)


class Generator(nn.Module):
    """encoder1 (with MS-CAM) -> decoder -> encoder2 (without MS-CAM)."""

    def __init__(self, image_size: int = 256, nz: int = 100, base_channels: int = 64, max_channels: int | None = None,
                 attention: bool = True, reduction: int = 4, in_channels: int = 3, output_scale: float = 1.0) -> None:
        super().__init__()
        common = dict(image_size=image_size, in_channels=in_channels, base_channels=base_channels,
                      max_channels=max_channels)
        self.encoder1 = Encoder(out_channels=nz, attention=attention, reduction=reduction, **common)
        self.decoder = Decoder(image_size, nz, in_channels, base_channels, max_channels, output_scale)
        self.encoder2 = Encoder(out_channels=nz, attention=False, **common)

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        z1 = self.encoder1(x)
        x_hat = self.decoder(z1)
        return GeneratorOutput(x_hat=x_hat, z1=z1, z2=self.encoder2(x_hat))


@dataclass
class DiscriminatorOutput:
    """Probability that each image is real, and the feature map before the last convolution."""

    prob: torch.Tensor  # (B,) in (0, 1)
    features: torch.Tensor  # (B, C_last, 4, 4)
    logit: torch.Tensor  # (B,), pre-sigmoid, for numerically safe BCE


class Discriminator(nn.Module):
    """Encoder layout (no attention) whose last convolution has one output channel, then a sigmoid."""

    def __init__(self, image_size: int = 256, base_channels: int = 64, max_channels: int | None = None,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = Encoder(image_size, 1, in_channels, base_channels, max_channels, attention=False)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        feats = self.encoder.features(x)
        logit = self.encoder.final(feats).flatten()
        return DiscriminatorOutput(prob=torch.sigmoid(logit), features=feats, logit=logit)


def weights_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN/GANomaly init of one module: conv ~ N(0, 0.02), BatchNorm weight ~ N(1, 0.02), biases 0.

    Use ``net.apply(weights_init)``, or :func:`init_weights` to draw from a given generator.
    """
    with torch.no_grad():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.weight.normal_(0.0, 0.02, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.normal_(1.0, 0.02, generator=generator)
            module.bias.zero_()
            module.reset_running_stats()


def init_weights(net: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Apply :func:`weights_init` to every submodule, drawing from ``generator`` (reproducible re-inits)."""
    return net.apply(functools.partial(weights_init, generator=generator))


def build_generator(m: ModelConfig) -> Generator:
    """The generator a model config describes (``cfg.model``)."""
    return Generator(image_size=m.image_size, nz=m.nz, base_channels=m.base_channels, max_channels=m.max_channels,
                     attention=m.attention, reduction=m.reduction, output_scale=m.output_scale)


def build_discriminator(m: ModelConfig) -> Discriminator:
    """The discriminator a model config describes (``cfg.model``)."""
    return Discriminator(image_size=m.image_size, base_channels=m.base_channels, max_channels=m.max_channels)
