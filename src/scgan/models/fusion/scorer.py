"""The fusion's scoring graph: both models score the same image, and their normalised scores and maps are averaged.

The PatchCore detector takes the image at its working size; the SCGAN + head takes it brought down to its S x S
(antialiased bilinear, as Pillow's resize brings a file to it) and its map is brought back up to the image's size.
Each model's default score is min-max normalised by its range on the normal validation images and each map by its
heat range there (the normal pixels' 0.9 quantile at 0, the maps' maxima's threshold quantile at 0.5, as
``Calibration.heat`` scales it, without the clipping), both measured through this graph when the fusion is fitted
(``scgan.training.fusion``), so that neither model's units outweigh the other's; ``fused`` is the mean of the two
scores, the map the mean of the two maps. One ``nn.Module``, so one ONNX graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Every score the fusion defines, in the column order of its output.
SCORES: dict[str, str] = {
    "fused": "mean of the PatchCore detector's and the SCGAN's default scores, each min-max normalised by its range "
             "on the normal validation images",
    "map_max": "largest value of the fused map (each model's map normalised by its heat range, the two averaged)",
}
PARTS = ("features", "restoration")  # the two models, in the order of FusionWeights' rows


def restoration_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (B, C, H, W) at the PatchCore detector's input as the SCGAN takes them: RGB (a grey image's grey in each
    channel), ``size`` x ``size``, brought down by antialiased bilinear resizing (as Pillow's resize brings a file)."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class FusionWeights(nn.Module):
    """The stored part that joins the two models: for each (``PARTS`` order) its default score's name and column
    among its scores, that score's normal validation range (low, span), its map's heat range (low, span) and its
    map's smoothing sigma, all fixed when the fusion is fitted. The names travel as a buffer of their UTF-8 bytes
    (a model file holds tensors only), so that a model whose scores moved is refused, not fused on the wrong column."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("score_low", "score_span", "map_low", "map_span", "sigma"):
            self.register_buffer(name, torch.zeros(len(PARTS)))
        self.register_buffer("column", torch.zeros(len(PARTS), dtype=torch.int64))
        self.register_buffer("names_utf8", torch.zeros(0, dtype=torch.uint8))

    @property
    def score_names(self) -> tuple[str, ...]:
        """Each part's default score's name (``PARTS`` order)."""
        return tuple(bytes(self.names_utf8.tolist()).decode("utf-8").split("\n"))

    @score_names.setter
    def score_names(self, names: tuple[str, ...]) -> None:
        self.names_utf8 = torch.tensor(list("\n".join(names).encode("utf-8")), dtype=torch.uint8)

    def set(self, names: list[str], column: list[int], score: list[tuple[float, float]],
            heat: list[tuple[float, float]], sigma: list[float]) -> FusionWeights:
        """Fill the buffers: per part, its default score's name and column, (low, span) of that score and of its
        map, its sigma. ValueError for a span that is not positive and finite."""
        for name, values in (("score_low", [s[0] for s in score]), ("score_span", [s[1] for s in score]),
                             ("map_low", [h[0] for h in heat]), ("map_span", [h[1] for h in heat]),
                             ("sigma", sigma)):
            getattr(self, name).copy_(torch.tensor(values, dtype=torch.float32))
        self.column.copy_(torch.tensor(column, dtype=torch.int64))
        self.score_names = tuple(names)
        self.check()
        return self

    def check(self) -> None:
        """ValueError where a span is not positive and finite, or a low value or sigma not finite."""
        spans = torch.cat([self.score_span, self.map_span])
        if not bool((torch.isfinite(spans) & (spans > 0)).all()):
            raise ValueError(f"the fusion's normalising spans must be positive and finite, got scores "
                             f"{self.score_span.tolist()} and maps {self.map_span.tolist()}")
        if not bool(torch.isfinite(torch.cat([self.score_low, self.map_low, self.sigma])).all()):
            raise ValueError("the fusion's normalising values are not finite")

    def check_columns(self, names: list[tuple[str, ...]]) -> None:
        """ValueError unless each part's stored column holds its stored score name among ``names`` (each part's
        scorer's names, ``PARTS`` order)."""
        for part, held, stored, column in zip(PARTS, names, self.score_names, self.column.tolist()):
            if not (0 <= column < len(held) and held[column] == stored):
                raise ValueError(f"the fusion's {part} model was fused on its score {stored!r} at column {column}, "
                                 f"and its scores are now {', '.join(held)}: fit the fusion again")


class FusionScorer(nn.Module):
    """Image batch (B, C, H, W) in [-1, 1] at the PatchCore detector's input -> (scores (B, 2): fused, map_max;
    fused map (B, H, W)). ``forward`` is the fp32 graph ONNX export takes; :meth:`run` runs each model's own ``run``
    (its speed options)."""

    names = tuple(SCORES)
    probability_map = False

    def __init__(self, features: nn.Module, restoration: nn.Module, weights: FusionWeights, size: int) -> None:
        super().__init__()
        self.features = features
        self.restoration = restoration
        self.weights = weights
        self.size = int(size)  # the SCGAN's S
        self.columns = tuple(int(c) for c in weights.column)

    def small(self, x: torch.Tensor) -> torch.Tensor:
        """The image as the SCGAN takes it (:func:`restoration_input`)."""
        return restoration_input(x, self.size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fuse(self.part_outputs(x))

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with each model's speed options. ``raw`` changes nothing: each model smooths its own map at
        its own sigma (the fusion's score.sigma is fixed)."""
        return self.fuse(self.part_outputs(x, speed=True))

    def part_outputs(self, x: torch.Tensor, speed: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each model's default score (B,) and map at the images' size (B, H, W), ``PARTS`` order, before they are
        normalised (what the fit measures the weights on); ``speed``: through each model's ``run``."""
        small = self.small(x)
        (fs, fm), (rs, rm) = ((self.features.run(x), self.restoration.run(small)) if speed
                              else (self.features(x), self.restoration(small)))
        rm = F.interpolate(rm[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return [(fs[:, self.columns[0]], fm), (rs[:, self.columns[1]], rm)]

    def fuse(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused scores (B, 2) and map (B, H, W) from each model's default score and map (:meth:`part_outputs`)."""
        w = self.weights
        scores = torch.stack([s for s, _ in parts], dim=1)
        fused = ((scores - w.score_low) / w.score_span).mean(dim=1)
        amap = sum((m - w.map_low[i]) / w.map_span[i] for i, (_, m) in enumerate(parts)) / len(parts)
        return torch.stack([fused, amap.flatten(1).amax(1)], dim=1), amap

    @property
    def sigma(self) -> float:
        """The PatchCore detector's smoothing (the SCGAN's is its own, at its S)."""
        return self.features.sigma

    def set_sigma(self, sigma: float) -> None:
        """Each model smooths its map at the sigma it was fitted with: only that one is taken."""
        if abs(sigma - self.sigma) > 1e-6:
            raise ValueError(f"a fusion's maps are smoothed by each model as fitted ({self.sigma:g} px for the "
                             f"PatchCore detector); it cannot score with sigma {sigma:g}")

    def map_scores(self, smooth: torch.Tensor) -> dict[str, torch.Tensor]:
        """map_max of fused maps (B, 1, H, W)."""
        return {"map_max": smooth.flatten(1).amax(1)}
