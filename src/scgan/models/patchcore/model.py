"""The PatchCore detector's scoring graph: PatchCore's recipe (Roth et al., CVPR 2022) on EfficientNet-Lite.

An image's patch features are the outputs of a few blocks of a frozen ImageNet backbone, each averaged over
its p x p neighbourhood (local aggregation), the deeper ones up-sampled to the first one's grid and
concatenated. A patch's anomaly is its distance to the nearest feature in a memory bank of normal patches;
the map of these distances is up-sampled to the image, smoothed with a Gaussian, and its maximum is the image's
score. No weight is learned: fitting is choosing the bank (``scgan.training.patchcore``). Where the bank holds the
self map's statistics (``patchcore.self_map``), the map returned is the mean of that map and of each patch's distance
to its own image's median patch, each normalised by normal images; the scores are the distance map's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scgan.models.patchcore.backbone import EfficientNetLite
from scgan.models.patchcore.coreset import nearest_distance
from scgan.models.scoring import GaussianBlur

# Every score the PatchCore detector defines, in the column order of its output.
SCORES: dict[str, str] = {
    "map_max": "maximum of the Gaussian-smoothed map of nearest-neighbour distances, up-sampled to the image",
    "patch_max": "largest nearest-neighbour distance of a patch feature (PatchCore's image score, unsmoothed)",
    "map_top": "mean of the largest values of the smoothed map, a fixed share of the working image's area "
               "(patchcore.top_share; computed only where that is set)",
    "map_z": "largest value of the smoothed map less the normal maps' mean at its location, over their spread there "
             "(patchcore.position_grid; computed only where that is set)",
}
# The scores every model computes; map_top only where its share is set (older files hold none).
BASE_SCORES = ("map_max", "patch_max")


def self_deviation(queries: torch.Tensor) -> torch.Tensor:
    """Each patch's distance to its own image's median patch: queries (B, N, D) in the bank's space -> (B, N). The
    median is per dimension, the lower of the two middle values where N is even (as ``torch.median``), taken by a sort:
    ONNX has no median."""
    n = queries.shape[1]
    middle = queries.sort(dim=1).values.narrow(1, (n - 1) // 2, 1)
    return (queries - middle).norm(dim=2)


def by_location(maps: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Maps (B, 1, H, W) judged location by location: (map - mean) / spread, the (1, 1, G, G) grids of normal maps'
    mean and spread up-sampled (bilinear) to each map's size."""
    size = maps.shape[-2:]
    return ((maps - F.interpolate(mean, size=size, mode="bilinear", align_corners=False))
            / F.interpolate(spread, size=size, mode="bilinear", align_corners=False))


def top_count(share: float, resolution: int) -> int:
    """How many map pixels ``map_top`` averages: ``share`` of the working area resolution^2, at least 1 (0 where the
    share is 0); one count for every image size and aspect, so the config check refuses a count larger than the
    smallest map the model takes."""
    return max(1, round(share * resolution * resolution)) if share > 0 else 0


class MemoryBank(nn.Module):
    """The normal patch features (M, D) in the space distances are measured in, and the map into it that every
    query feature takes: multiplied by ``scale`` (D,), then, where the bank is whitened, centred on ``mean`` (D,)
    and multiplied by ``whitening`` (D, D) (Euclidean distances there are Mahalanobis distances of the scaled
    features); the sha256 of the backbone weights the features were computed with; and, where ``map_z`` is
    computed, how high normal smoothed maps run at each cell of a G x G grid over the image (:meth:`set_position`);
    and, where the self map is fused into the map returned, its normal statistics (:meth:`set_self`)."""

    def __init__(self, bank: torch.Tensor, backbone_digest: str = "", scale: torch.Tensor | None = None,
                 whitening: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("scale", torch.ones(bank.shape[1]) if scale is None else scale.float().contiguous())
        self.whitened = whitening is not None
        if whitening is not None:  # only then stored: files of unwhitened banks keep their exact parts
            self.register_buffer("mean", whitening[0].float().contiguous())
            self.register_buffer("whitening", whitening[1].float().contiguous())
        digest = bytes.fromhex(backbone_digest) if backbone_digest else b""
        self.register_buffer("backbone_digest", torch.tensor(list(digest), dtype=torch.uint8))

    @property
    def digest(self) -> str:
        return bytes(self.backbone_digest.tolist()).hex()

    def with_bank(self, bank: torch.Tensor) -> MemoryBank:
        """A bank of other rows in this one's space (scale, whitening, backbone), with its normal maps' grid."""
        out = MemoryBank(bank, self.digest, self.scale, (self.mean, self.whitening) if self.whitened else None)
        if self.positioned:
            out.set_position(self.position_mean[0, 0], self.position_spread[0, 0], float(self.position_sigma))
        if self.has_self:
            out.set_self(self.self_mean[0, 0], self.self_spread[0, 0], float(self.self_sigma), self.self_norm)
        return out

    @property
    def has_self(self) -> bool:
        """Whether the bank holds the self map's normal statistics (the map returned fuses it)."""
        return hasattr(self, "self_mean")

    def set_self(self, mean: torch.Tensor, spread: torch.Tensor, sigma: float,
                 norm: torch.Tensor | None = None) -> None:
        """The self map's normal statistics: its normal maps, smoothed with ``sigma`` px, their mean and spread per
        cell of a G x G grid (each (G, G), the spread > 0), and ``norm`` (4,): the median and the 0.99 quantile less
        the median of the normal validation images' pixels, of the distance map then of the self map judged by
        location (None: 0, 1, 0, 1, until the fit measures them). Both hold only at that sigma."""
        norm = torch.tensor([0.0, 1.0, 0.0, 1.0]) if norm is None else norm
        for name, value in (("self_mean", mean.float().reshape(1, 1, *mean.shape[-2:])),
                            ("self_spread", spread.float().reshape(1, 1, *spread.shape[-2:])),
                            ("self_norm", norm.float().reshape(4)), ("self_sigma", torch.tensor(float(sigma)))):
            if hasattr(self, name):
                getattr(self, name).data = value.contiguous()
            else:
                self.register_buffer(name, value.contiguous())

    def self_z(self, smooth_self: torch.Tensor) -> torch.Tensor:
        """Smoothed self maps (B, 1, H, W) judged by location: (map - normal mean) / normal spread."""
        return by_location(smooth_self, self.self_mean, self.self_spread)

    def fuse_self(self, smooth: torch.Tensor, smooth_self: torch.Tensor) -> torch.Tensor:
        """The map returned where the self map is fused: the mean of the smoothed distance map and the self map
        judged by location, each less its normal pixels' median, over their 0.99 quantile less it."""
        n = self.self_norm
        return ((smooth - n[0]) / n[1] + (self.self_z(smooth_self) - n[2]) / n[3]) / 2

    @property
    def positioned(self) -> bool:
        """Whether the bank holds the normal maps' statistics by location (``map_z``)."""
        return hasattr(self, "position_mean")

    def set_position(self, mean: torch.Tensor, spread: torch.Tensor, sigma: float) -> None:
        """The normal smoothed maps' mean and spread (each (G, G), the spread > 0) per cell of a grid over the image,
        at the map smoothing ``sigma`` they were measured with (only files that hold them store them)."""
        for name, value in (("position_mean", mean), ("position_spread", spread)):
            value = value.float().reshape(1, 1, *value.shape[-2:]).contiguous()
            if hasattr(self, name):
                getattr(self, name).data = value
            else:
                self.register_buffer(name, value)
        sigma = torch.tensor(float(sigma))
        if hasattr(self, "position_sigma"):
            self.position_sigma.data = sigma
        else:
            self.register_buffer("position_sigma", sigma)

    def position_z(self, smooth: torch.Tensor) -> torch.Tensor:
        """Smoothed maps (B, 1, H, W) as (map - normal mean) / normal spread, the grid up-sampled to each map."""
        return by_location(smooth, self.position_mean, self.position_spread)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features (N, D) as the bank holds them: scaled, and whitened where the bank is."""
        f = features * self.scale
        return (f - self.mean) @ self.whitening if self.whitened else f


def whitening_transform(patches: torch.Tensor, shrinkage: float,
                        chunk: int = 1 << 13) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), W (D, D)) with which ``(f - mean) @ W`` has unit covariance over ``patches`` (N, D) after
    shrinking their covariance towards its mean variance: S = (1 - shrinkage) C + shrinkage tr(C) / D I, W = S^-1/2.
    Euclidean distances after the map are Mahalanobis distances under S (Rippel et al.: the directions normal
    patches barely vary in are where defects show). Accumulated in float64 over chunks of rows: memory O(D^2)
    beside the patches."""
    n, d = patches.shape
    mean = sum(rows.double().sum(0) for rows in patches.split(chunk)) / n
    cov = torch.zeros(d, d, dtype=torch.float64, device=patches.device)
    for rows in patches.split(chunk):
        centred = rows.double() - mean
        cov += centred.T @ centred
    cov /= max(n - 1, 1)
    if cov.trace() <= 0:  # every patch alike: no direction to weigh, the Euclidean distance
        return mean.float(), torch.eye(d, device=patches.device)
    cov = (1 - shrinkage) * cov + shrinkage * cov.trace() / d * torch.eye(d, dtype=cov.dtype, device=patches.device)
    values, vectors = torch.linalg.eigh(cov)
    w = vectors @ torch.diag(values.clamp_min(1e-12 * values.max()).rsqrt()) @ vectors.T
    return mean.float(), w.float()


def whiten_(patches: torch.Tensor, mean: torch.Tensor, w: torch.Tensor, chunk: int = 1 << 13) -> torch.Tensor:
    """``(patches - mean) @ w`` written over ``patches`` (N, D) chunk by chunk (w is D x D): no second copy."""
    for rows in patches.split(chunk):
        rows.copy_((rows - mean) @ w)
    return patches


def distance_maps(patch: torch.Tensor, size: tuple[int, int] | torch.Size,
                  blur: GaussianBlur) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-bank distances (B, 1, h, w) as maps (B, 1, H, W) of ``size``: (up-sampled, and smoothed by ``blur``)."""
    full = F.interpolate(patch, size=size, mode="bilinear", align_corners=False)
    return full, blur(full)


@dataclass(frozen=True)
class FeatureLayout:
    """Which backbone blocks make the features, how patches are aggregated, and how many pixels of mirrored image
    the backbone sees beyond each border (``pad``, a multiple of the deepest block's stride; 0 = none)."""

    layers: tuple[int, ...]
    neighbourhood: int
    pad: int = 0


def embed(backbone: EfficientNetLite, x: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """Patch features (B, D, h, w) of images (B, C, H, W) in [-1, 1], on the grid of the first (finest) layer.

    With ``layout.pad``, the image is mirrored beyond its borders first and the features cropped back to its own
    grid: a border patch is then seen amid texture like its own, not beside the convolutions' zero padding."""
    if layout.pad:
        x = F.pad(x, (layout.pad,) * 4, mode="reflect")
    maps = backbone(x, layout.layers)
    p = layout.neighbourhood
    if p > 1:
        maps = [F.avg_pool2d(m, p, stride=1, padding=p // 2, count_include_pad=False) for m in maps]
    size = maps[0].shape[-2:]
    maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
    features = torch.cat(maps, dim=1)
    if layout.pad:
        cut = layout.pad * size[-1] // x.shape[-1]  # the pad in cells of the first layer's grid
        features = features[..., cut:size[0] - cut, cut:size[1] - cut]
    return features


class PatchCoreScorer(nn.Module):
    """Image batch (B, C, H, W) in [-1, 1] -> (scores (B, K) in ``names`` order, anomaly map (B, H, W)).

    H and W must be multiples of the backbone's stride at the deepest layer (``InputSpec.multiple``). The map is
    in feature-distance units (where the self map is fused, in units of normal pixels' spread), not a probability.
    ``forward`` is the fp32 graph that ONNX export takes; :meth:`run` adds the speed options (channels-last input,
    the backbone under autocast); distances stay fp32.
    """

    probability_map = False

    def __init__(self, backbone: EfficientNetLite, memory: MemoryBank, layout: FeatureLayout, sigma: float = 4.0,
                 autocast_dtype: torch.dtype | None = None, channels_last: bool = False, top: int = 0,
                 position: bool = False, position_map: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.memory = memory
        self.layout = layout
        self.blur = GaussianBlur(sigma)
        self.register_buffer("bank_sq", memory.bank.pow(2).sum(1), persistent=False)
        self.autocast_dtype = autocast_dtype
        self.channels_last = bool(channels_last)
        self.top = int(top)  # map_top averages this many pixels of the smoothed map (0: no map_top)
        self.position = bool(position)  # map_z, from the memory bank's normal maps by location (set before scoring)
        self.position_map = bool(position_map) and self.position  # the map returned is map_z's
        self.names: tuple[str, ...] = BASE_SCORES + (("map_top",) if self.top else ()) + (
            ("map_z",) if self.position else ())
        # The map returned fuses the self map where the bank holds its statistics (and map_z's map is not shown).
        self.self_map = memory.has_self and not self.position_map

    def patch_maps(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, D, h, w) -> every patch's nearest-bank distance (B, 1, h, w), and where the self map is fused, its
        distance to its own image's median patch (B, 1, h, w) (:func:`self_deviation`; else None)."""
        b, d, h, w = features.shape
        queries = self.memory.project(features.permute(0, 2, 3, 1).reshape(b * h * w, d).float())
        near = self.nearest(queries).reshape(b, 1, h, w)
        if not self.self_map:
            return near, None
        return near, self_deviation(queries.reshape(b, h * w, d)).reshape(b, 1, h, w)

    def nearest(self, queries: torch.Tensor) -> torch.Tensor:
        """Nearest-bank distance (N,) of patch features (N, D) already in the bank's space
        (:meth:`MemoryBank.project`)."""
        return nearest_distance(queries, self.memory.bank, self.bank_sq)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        near, own = self.patch_maps(embed(self.backbone, x, self.layout))
        return self.map_outputs(x.shape[-2:], near, own=own)

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the speed options; ``raw`` returns the unsmoothed map (to choose sigma).

        One image at a time goes through the backbone and the nearest-neighbour search: at 320 px a batch's
        activations and distance matrix leave the CPU's caches, and on 2 cores one image at a time scored faster
        per image than batches of 4 (docs/performance.md). The numbers are the same.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        patches, owns = [], []
        for one in x.split(1):
            with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.autocast_dtype is not None):
                features = embed(self.backbone, one, self.layout)
            with torch.autocast(x.device.type, enabled=False):
                near, own = self.patch_maps(features.float())
            patches.append(near)
            owns.append(own)
        return self.map_outputs(x.shape[-2:], torch.cat(patches), raw, own=torch.cat(owns) if self.self_map else None)

    def map_outputs(self, size: tuple[int, int] | torch.Size, patch: torch.Tensor, raw: bool = False,
                    own: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and anomaly maps (B, H, W) of images of ``size`` (H, W) from their patches' nearest-bank distances
        (B, 1, h, w): the smoothed distance map, or map_z's where ``position_map``, or the fusion with the self map
        where ``own`` (the patches' distances to their image's median patch, :meth:`patch_maps`) is given (``raw``:
        the distances unsmoothed). The scores are the distance map's in every case."""
        full, smooth = self.upsampled(size, patch)
        named = {**self.map_scores(smooth), "patch_max": patch.flatten(1).amax(1)}
        scores = torch.stack([named[n] for n in self.names], dim=1)
        if raw:
            return scores, full[:, 0]
        if own is not None:
            return scores, self.memory.fuse_self(smooth, self.upsampled(size, own)[1])[:, 0]
        return scores, (self.memory.position_z(smooth) if self.position_map else smooth)[:, 0]

    def self_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two maps the fused map is made of, before their normalisation, for images (B, C, H, W): the smoothed
        distance map and the self map judged by location, each (B, H, W) (the fit measures their normal pixels)."""
        near, own = self.patch_maps(embed(self.backbone, x, self.layout))
        size = x.shape[-2:]
        return self.upsampled(size, near)[1][:, 0], self.memory.self_z(self.upsampled(size, own)[1])[:, 0]

    def upsampled(self, size: tuple[int, int] | torch.Size, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest-bank distances (B, 1, h, w) as maps (B, 1, H, W) of ``size``: (unsmoothed, smoothed)."""
        return distance_maps(patch, size, self.blur)

    def map_scores(self, smooth: torch.Tensor) -> dict[str, torch.Tensor]:
        """map_max, map_top where its count is set and map_z where the bank holds its grid, of smoothed maps
        (B, 1, H, W)."""
        flat = smooth.flatten(1)
        out = {"map_max": flat.amax(1)}
        if self.top:
            out["map_top"] = flat.topk(self.top, dim=1).values.mean(1)
        if self.position:
            if not self.memory.positioned:
                raise RuntimeError("map_z needs the normal maps' grid, and this memory bank holds none")
            out["map_z"] = self.memory.position_z(smooth).flatten(1).amax(1)
        return out

    @property
    def map_peak(self) -> str | None:
        """The score that is the largest value of the anomaly map as returned (so green on the heat map is its
        threshold); None where the map fuses the self map, whose peak no score is."""
        if self.self_map:
            return None
        return "map_z" if self.position_map else "map_max"

    @property
    def sigma(self) -> float:
        """The smoothing of the anomaly map, in pixels."""
        return self.blur.sigma

    def set_sigma(self, sigma: float) -> None:
        """Smooth maps (and so map_max) with ``sigma`` pixels from now on; where map_z is computed or the self map
        fused, only with the sigma their normal maps were smoothed with."""
        if self.position and self.memory.positioned and abs(float(self.memory.position_sigma) - sigma) > 1e-6:
            raise ValueError(f"map_z's normal maps were smoothed with sigma {float(self.memory.position_sigma):g} px; "
                             f"this model cannot score with sigma {sigma:g} (fit it again with that score.sigma)")
        if self.self_map and abs(float(self.memory.self_sigma) - sigma) > 1e-6:
            raise ValueError(f"the self map's normal maps were smoothed with sigma {float(self.memory.self_sigma):g} "
                             f"px; this model cannot score with sigma {sigma:g} (fit it again with that score.sigma)")
        self.blur = GaussianBlur(sigma).to(self.memory.bank.device)
