"""The SCGAN LightningModule: manual optimisation of G then D, calibration on normal validation images."""
from __future__ import annotations


import lightning as L
import numpy as np
import torch

from scgan.config import Config
from scgan.data.augment import build_augmentation
from scgan.losses import LossWeights, discriminator_loss, feature_matching_loss, generator_loss
from scgan.models.networks import Discriminator, Generator, init_weights
from scgan.scoring import (SCORE_NAMES, Calibration, GaussianBlur, Scorer, autocast_dtype, default_sigma,
                           fit_calibration, select_sigma, sigma_candidates)
from scgan.training.datamodule import seeded_generator


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


def build_generator(cfg: Config) -> Generator:
    m = cfg.model
    return Generator(image_size=m.image_size, nz=m.nz, base_channels=m.base_channels,
                     max_channels=m.max_channels, attention=m.attention, reduction=m.reduction,
                     output_scale=m.output_scale)


def build_discriminator(cfg: Config) -> Discriminator:
    m = cfg.model
    return Discriminator(image_size=m.image_size, base_channels=m.base_channels, max_channels=m.max_channels)


def build_scorer(cfg: Config, generator: Generator, precision: str | None = None,
                 channels_last: bool | None = None, calibration: Calibration | None = None) -> Scorer:
    """The scorer of cfg; ``precision`` ("bf16-mixed", ...) runs its generator under autocast (None: fp32).

    Scoring precision is chosen where the scoring runs, not stored with the model: a model trained in
    bf16 on a GPU must not make every later CPU test run in bf16 (slow without native bf16 support).
    ``channels_last`` (None: cfg.train.channels_last) feeds the generator channels-last input.
    A ``calibration`` that records its sigma (score.sigma = auto) sets the smoothing.
    """
    sigma = cfg.score.sigma
    if calibration is not None and calibration.sigma is not None:
        sigma = calibration.sigma  # the calibration's statistics hold only with the sigma they were fitted with
    elif sigma is None or sigma == "auto":
        sigma = default_sigma(cfg.model.image_size)
    cl = cfg.train.channels_last if channels_last is None else channels_last
    return Scorer(generator, beta=cfg.score.beta, sigma=sigma, autocast_dtype=autocast_dtype(precision),
                  channels_last=cl)


class SCGANModule(L.LightningModule):
    """Trains G = encoder1 -> decoder -> encoder2 against D on augmented normal images.

    ``augmentation`` is the resolved augmentation name (``auto`` already mapped by category kind).
    """

    def __init__(self, config: dict, augmentation: str) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts and strings only: checkpoints load with weights_only=True
        self.cfg = Config.from_dict(config)
        cfg = self.cfg
        self.automatic_optimization = False
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        g = torch.Generator().manual_seed(cfg.train.seed)
        init_weights(self.generator, g)
        init_weights(self.discriminator, g)
        self.scorer = build_scorer(cfg, self.generator)
        self.augment = build_augmentation(augmentation, cfg.augment.n_patches, cfg.augment.patch_area)
        # Synthetic defects on validation images, only to pick the "auto" score (never trained on).
        self.val_defects = build_augmentation("confetti", cfg.score.selection_patches, cfg.augment.patch_area)
        self.weights = LossWeights(cfg.loss.w_enc, cfg.loss.w_con, cfg.loss.w_adv, cfg.loss.w_ssim)
        self.calibration: Calibration | None = None
        self.d_resets = 0
        self._val_scores: list[np.ndarray] = []
        self._val_synthetic: list[np.ndarray] = []
        # score.sigma = auto: unsmoothed residual maps of the validation images, clean and with synthetic
        # defects, and the defects' masks.
        self._val_residuals: list[torch.Tensor] = []
        self._val_synthetic_residuals: list[torch.Tensor] = []
        self._val_defect_masks: list[torch.Tensor] = []

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        betas = (t.beta1, t.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=t.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr, betas=betas)
        return opt_g, opt_d

    def _check_finite(self, name: str, value: torch.Tensor, batch_idx: int) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"loss {name} became {value.item()} at epoch {self.current_epoch}, step {batch_idx} "
                f"(global step {self.global_step}); the last checkpoint is kept — lower lr or check the data"
            )

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        x = batch["image"]  # (B, 3, S, S) clean normal images in [-1, 1]
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Augmentation randomness depends on (seed, epoch, batch, rank) only: resumes are exact.
        gen = seeded_generator(x.device, self.cfg.train.seed, self.current_epoch, batch_idx, self.global_rank)
        x_aug = self.augment(x, generator=gen)
        target = x if self.cfg.loss.con_target == "clean" else x_aug

        out = self.generator(x_aug)
        # D's weights are left out of G's graph: their gradients would be discarded (opt_d zeroes them
        # first), and not computing them saves ~5% of a step without changing any number.
        self.discriminator.requires_grad_(False)
        fake = self.discriminator(out.x_hat)
        self.discriminator.requires_grad_(True)  # the graph is built: D(x^) stays without D's weights
        real = None
        if self.cfg.loss.adv_type == "feature":
            # D(x) serves both steps: G's step leaves D's weights as they are, so D's step would only
            # recompute the same numbers (one D forward of ~18 per step saved).
            real = self.discriminator(x)
            g_loss = generator_loss(out, target, None, self.weights,
                                    adv=feature_matching_loss(real.features.detach(), fake.features))
        else:
            g_loss = generator_loss(out, target, fake.logit, self.weights)
        for name, value in g_loss.terms().items():
            self._check_finite(f"generator/{name}", value, batch_idx)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss.total)
        opt_g.step()

        real_logit = (real if real is not None else self.discriminator(x)).logit
        d_loss = discriminator_loss(real_logit, self.discriminator(out.x_hat.detach()).logit)
        self._check_finite("discriminator", d_loss, batch_idx)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        # The reset decision is taken on the mean over ranks, so that under DDP all ranks reset D together.
        d_mean = self.trainer.strategy.reduce(d_loss.detach().clone(), reduce_op="mean")  # reduce works in place
        if d_mean.item() < self.cfg.train.d_reset_threshold:
            # D has collapsed (GANomaly): start it afresh so G keeps an adversarial signal.
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + self.global_step)
            init_weights(self.discriminator, gen)
            self.d_resets += 1

        logs = {f"train/{k}": v.detach() for k, v in g_loss.terms().items()}
        logs["train/d_loss"] = d_loss.detach()
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log("loss_g", g_loss.total.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def on_train_epoch_end(self) -> None:
        # d_resets and the calibration are identical on every rank (resets are decided on the mean D loss,
        # buffers are broadcast before validation); sync_dist=True averages equal values, harmlessly.
        self.log("train/d_resets", float(self.d_resets), on_epoch=True, sync_dist=True)

    # ---- validation: normal images only, used for calibration -------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_synthetic = [], []
        self._val_residuals, self._val_synthetic_residuals, self._val_defect_masks = [], [], []
        self._broadcast_buffers()

    def on_train_end(self) -> None:
        self._broadcast_buffers()

    def _broadcast_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm running statistics (a no-op on one process).

        DDP all-reduces gradients, not buffers: during a step each rank's running statistics move on
        its own shard. Copying rank 0's (which DDP also broadcasts before every training step) makes
        the calibration and the final weights identical on all ranks.
        """
        if self.trainer.world_size == 1:
            return
        # The blur kernel is no model state (its length follows the smoothing sigma): left out.
        buffers = [b for n, b in self.named_buffers() if b.is_floating_point() and not n.startswith("scorer.blur.")]
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        for b, v in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(v.view_as(b))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["image"]
        # Calibrate in fp32 whatever the training precision: test and predict score in fp32.
        auto_sigma = self.cfg.score.sigma == "auto"
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores, residual = self.scorer.run(x, raw=auto_sigma)
            self._val_scores.append(scores.float().cpu().numpy())
            if auto_sigma:
                self._val_residuals.append(residual[:, None].float().cpu())
            if self.cfg.score.default_score == "auto" or auto_sigma:
                gen = seeded_generator(x.device, self.cfg.data.split_seed, batch_idx)
                x_defect = self.val_defects(x, generator=gen)
                synthetic, residual = self.scorer.run(x_defect, raw=auto_sigma)
                self._val_synthetic.append(synthetic.float().cpu().numpy())
                if auto_sigma:
                    self._val_synthetic_residuals.append(residual[:, None].float().cpu())
                    self._val_defect_masks.append((x_defect != x).any(dim=1, keepdim=True).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores = np.concatenate(self._val_scores)
        synthetic = np.concatenate(self._val_synthetic) if self._val_synthetic else None
        sigma, sigma_selection = self.scorer.blur.sigma, {}
        if self._val_residuals:
            normal_res, synth_res = torch.cat(self._val_residuals), torch.cat(self._val_synthetic_residuals)
            sigma, sigma_selection = select_sigma(normal_res, synth_res, torch.cat(self._val_defect_masks),
                                                  sigma_candidates(self.cfg.model.image_size))
            if self.trainer.world_size > 1:  # rank 0's choice for all, even if kernels differ in the last bit
                sigma, sigma_selection = self.trainer.strategy.broadcast((sigma, sigma_selection), src=0)
            self.scorer.set_sigma(sigma)
            # map_max is the only score that depends on sigma: recompute it with the chosen one.
            col = SCORE_NAMES.index("map_max")
            blur = GaussianBlur(sigma)
            scores[:, col] = blur(normal_res).flatten(1).amax(1).numpy()
            synthetic[:, col] = blur(synth_res).flatten(1).amax(1).numpy()
        if self.cfg.score.default_score != "auto":
            synthetic = None
        cal = fit_calibration(scores, self.cfg.score.threshold_quantile, synthetic)
        cal.sigma, cal.sigma_selection = float(sigma), sigma_selection
        self.calibration = cal
        if not self.trainer.sanity_checking:
            name = cal.resolve(self.cfg.score.default_score)
            self.log("val/score_mean", cal.scores[name].mean, sync_dist=True)
            self.log("val/l_con_mean", cal.scores["l_con"].mean, sync_dist=True)
            self.log("val/threshold", cal.scores[name].threshold, sync_dist=True)

    # ---- checkpoints carry the calibration ---------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["scgan_calibration"] = self.calibration.to_dict() if self.calibration else None
        checkpoint["scgan_d_resets"] = self.d_resets

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        cal = checkpoint.get("scgan_calibration")
        self.calibration = Calibration.from_dict(cal) if cal else None
        self.d_resets = int(checkpoint.get("scgan_d_resets", 0))


__all__ = ["NonFiniteLossError", "SCGANModule", "build_discriminator", "build_generator", "build_scorer"]
