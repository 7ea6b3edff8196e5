"""What every other layer needs to know of a kind of model: the contract a kind fulfils.

A kind (the paper's SCGAN, the PatchCore detector) lives in its own folder under ``scgan.models`` and describes
itself with a :class:`ModelKind`; ``scgan.models.registry`` lists them, and its fitter is registered in
``scgan.training.fit``. Config, calibration, model files, the ``Detector``, ONNX export, reports, the service and
every command work on any kind through these two alone: nothing outside a kind's folder asks which kind it is.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scgan.config import Config
    from scgan.data.io import InputSpec


@runtime_checkable
class Scorer(Protocol):
    """A kind's scoring graph: an ``nn.Module`` whose ``forward`` maps images (B, C, H, W) in [-1, 1] to (scores
    (B, K) in ``names`` order, anomaly map (B, H, W)) in fp32; ``forward`` is what ONNX export takes.

    ``names`` includes ``map_max``, the largest value of the smoothed map (calibration re-computes it, and every
    other score of ``map_scores``, when it chooses the smoothing; a scorer with scores that are the smoothed peak of
    a map of their own gives those maps unsmoothed by ``other_raw_maps(x)``, and calibration smooths them too).
    ``probability_map``: the map is a probability in [0, 1], shown as it is, not a distance scaled by what normal
    images reach.
    """

    names: tuple[str, ...]
    probability_map: bool

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the speed options; ``raw``: the map before smoothing (to choose sigma)."""
        ...

    @property
    def sigma(self) -> float:
        """The smoothing of the anomaly map, in pixels."""
        ...

    def set_sigma(self, sigma: float) -> None:
        """Smooth anomaly maps (and so ``map_max``) with ``sigma`` pixels from now on."""
        ...

    def map_scores(self, smooth: torch.Tensor) -> dict[str, torch.Tensor]:
        """The scores computed from the smoothed map (B, 1, H, W), by name (at least ``map_max``): calibration
        computes them again from the raw maps when it chooses the smoothing."""
        ...


@dataclass(frozen=True)
class ModelKind:
    """One kind of model: its config, its scores, its input, its stored parts and its scoring graph.

    - ``sections``: its own config sections by name (dataclasses with defaults and ``validate``); a config of this
      kind holds these and the shared ones only. A composite kind lists the sections of its parts;
    - ``scores``: every score the kind defines, by name, with a one-line description (column order);
      ``score_preference``: the order in which equally good scores are preferred (``auto`` ties, a default);
    - ``score_names(cfg)``: the ones a model of ``cfg`` computes;
    - ``input_spec(cfg)``: how images are brought to it (a fitted model may store another channel count);
    - ``build_parts(cfg, state)``: the networks a model file stores, fresh (``state=None``) or loaded from
      ``{part: state_dict}`` (strict; RuntimeError when they do not fit);
    - ``build_scorer(cfg, parts, calibration=None, precision=None, channels_last=None)``: its :class:`Scorer`;
    - ``check_config(cfg)``: ValueError for a setting of this kind that cannot work;
    - ``recalibration_keys``: its settings (``section.key``) that change only how scores are computed from its parts,
      so that ``scgan calibrate`` may change them without fitting again (beside the shared score settings);
    - ``resumable``: whether an interrupted fit continues (``train --resume``); ``multi_device``: whether it fits
      on accelerators, several devices and strategies (else on one CPU process);
    - ``scoring_backend``: the runtime ``--backend auto`` scores it on: "onnx" where its exported graph runs faster on
      ONNX Runtime than torch does (``scgan.inference.backend``), else "torch";
    - ``updatable``: whether new normal images can join a fitted model without fitting it again (``scgan update``;
      its updater is registered in ``scgan.training.update``);
    - ``crossfit``: whether its fit can score every normal training image with a model fitted without it
      (``score.threshold_source = crossfit``; its fit calls ``scgan.training.crossfit``);
    - ``describe(cfg)``: a few words on the model a config makes ("head seg"), for messages.
    """

    name: str
    description: str
    sections: Mapping[str, type]
    scores: Mapping[str, str]
    score_preference: tuple[str, ...]
    score_names: Callable[[Config], tuple[str, ...]]
    input_spec: Callable[[Config], InputSpec]
    build_parts: Callable[[Config, dict[str, Any] | None], dict[str, nn.Module]]
    build_scorer: Callable[..., Scorer]
    check_config: Callable[[Config], None]
    recalibration_keys: tuple[str, ...] = ()
    resumable: bool = False
    multi_device: bool = False
    scoring_backend: str = "torch"
    updatable: bool = False
    crossfit: bool = False
    describe: Callable[[Config], str] = lambda cfg: ""
