"""What every other layer needs to know of a kind of model.

A kind (the paper's SCGAN, the feature-memory detector) lives in its own folder under ``scgan.models`` and
describes itself with a :class:`ModelKind` (``scgan.models.registry`` lists them). Calibration, model files, the
``Detector``, ONNX export, reports
and every command work on any kind through it alone.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from scgan.config import Config
    from scgan.data.io import InputSpec


@dataclass(frozen=True)
class ModelKind:
    """One kind of model: its scores, its input, its stored parts and its scoring graph.

    - ``scores``: every score the kind defines, by name, with a one-line description (column order);
    - ``score_names(cfg)``: the ones a model of ``cfg`` computes;
    - ``input_spec(cfg)``: how images are brought to it (a fitted model may store another channel count);
    - ``build_parts(cfg, state)``: the networks a model file stores, fresh (``state=None``) or loaded from
      ``{part: state_dict}`` (strict; RuntimeError when they do not fit);
    - ``build_scorer(cfg, parts, calibration=None, precision=None, channels_last=None)``: the scoring graph, an
      ``nn.Module`` mapping (B, C, H, W) in [-1, 1] to (scores (B, K), anomaly map (B, H, W));
    - ``check_config(cfg)``: ValueError for a setting of this kind that cannot work.
    """

    name: str
    description: str
    scores: Mapping[str, str]
    score_names: Callable[[Config], tuple[str, ...]]
    input_spec: Callable[[Config], InputSpec]
    build_parts: Callable[[Config, dict[str, Any] | None], dict[str, nn.Module]]
    build_scorer: Callable[..., nn.Module]
    check_config: Callable[[Config], None]


def one_of(value: object, valid, key: str) -> None:
    """ValueError unless ``value`` is one of ``valid``, naming the valid values (a kind's config checks)."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{key} must be one of {', '.join(map(str, valid))}; got {value!r}")
