"""The paper's SCGAN as a model kind: a generator (and the optional learned head) scored by how badly it restores."""
from __future__ import annotations

from typing import Any

from torch import nn

from scgan.config import AugmentConfig, Config, LossConfig, ModelConfig, TrainConfig, one_of
from scgan.data.augment import AUGMENTATIONS
from scgan.data.io import InputSpec
from scgan.models.kind import ModelKind
from scgan.models.scgan.head import build_head
from scgan.models.scgan.losses import ADVERSARIAL_LOSSES, RESTORATION_TARGETS
from scgan.models.scgan.networks import build_generator, check_image_size
from scgan.models.scgan.scorer import SCORES, build_scorer, score_names

HEADS = ("none", "seg")
# When synthetic defects separate two scores equally well, prefer the earlier one: learned before local before
# global.
SCORE_PREFERENCE = ("seg_max", "map_max", "patch_max", "msgms_max", "ssim_max", "l_con", "as", "l_enc")


def _score_names(cfg: Config) -> tuple[str, ...]:
    return score_names(cfg.model.head != "none")


def _input_spec(cfg: Config) -> InputSpec:
    return InputSpec(cfg.model.image_size)  # S x S RGB, whatever the image's aspect (SPEC section 1)


def _build_parts(cfg: Config, state: dict[str, Any] | None = None) -> dict[str, nn.Module]:
    """The generator and, with model.head = seg, the head; ``state`` loads their weights (strict)."""
    parts = {"generator": build_generator(cfg.model)}
    head = build_head(cfg.model)
    if head is not None:
        parts["seg_head"] = head
    if state is not None:
        if set(state) != set(parts):
            missing, extra = sorted(set(parts) - set(state)), sorted(set(state) - set(parts))
            raise RuntimeError(f"its config says head={cfg.model.head!r}, but the file "
                               + (f"lacks the {', '.join(missing)} weights" if missing else
                                  f"also holds {', '.join(extra)} weights"))
        for name, module in parts.items():
            module.load_state_dict(state[name], strict=True)
    for module in parts.values():
        module.eval()
    return parts


def _build_scorer(cfg: Config, parts: dict[str, nn.Module], calibration=None, precision: str | None = None,
                  channels_last: bool | None = None) -> nn.Module:
    return build_scorer(cfg, parts["generator"], precision=precision, channels_last=channels_last,
                        calibration=calibration, seg_head=parts.get("seg_head"))


def _check_config(cfg: Config) -> None:
    check_image_size(cfg.model.image_size)
    one_of(cfg.model.head, HEADS, "head")
    one_of(cfg.loss.adv_type, ADVERSARIAL_LOSSES, "adv_type")
    one_of(cfg.loss.con_target, RESTORATION_TARGETS, "con_target")
    one_of(cfg.augment.name, ("auto", *AUGMENTATIONS), "augment.name")
    if SCORES.get(cfg.score.default_score) and SCORES[cfg.score.default_score].needs_head and cfg.model.head == "none":
        raise ValueError(f"default_score {cfg.score.default_score!r} needs a model with a head (model.head=seg)")
    bad = [k for k in cfg.augment.sources if k not in AUGMENTATIONS or k == "mixture"]
    if bad:
        raise ValueError(f"augment.sources must map augmentation names (not mixture) to weights; unknown: {bad}; "
                         f"valid: {', '.join(k for k in AUGMENTATIONS if k != 'mixture')}")


SCGAN = ModelKind(
    name="scgan",
    description="the paper's SCGAN: restores the image and scores what it could not restore",
    sections={"model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig, "train": TrainConfig},
    scores={name: d.description for name, d in SCORES.items()},
    score_preference=SCORE_PREFERENCE,
    score_names=_score_names,
    input_spec=_input_spec,
    build_parts=_build_parts,
    build_scorer=_build_scorer,
    check_config=_check_config,
    recalibration_keys=("model.beta",),
    resumable=True,
    multi_device=True,
    describe=lambda cfg: f"head {cfg.model.head}",
)
