"""The SCGAN LightningModule: manual optimisation of G then D, calibration on normal validation images."""
from __future__ import annotations

import lightning as L
import torch

from scgan.calibration.stats import Calibration
from scgan.config import config_from_dict
from scgan.data.augment import build_augmentation
from scgan.inference.calibrate import CalibrationFitter
from scgan.models.scgan.head import build_head
from scgan.models.scgan.kind import SCORE_PREFERENCE
from scgan.models.scgan.losses import (
    ADVERSARIAL_LOSSES,
    RESTORATION_TARGETS,
    LossWeights,
    adversarial_term,
    discriminator_loss,
    focal_loss,
    generator_loss,
)
from scgan.models.scgan.networks import build_discriminator, build_generator, init_weights
from scgan.models.scgan.scorer import Scorer, build_scorer
from scgan.utils.seed import seeded_generator


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


MAX_SKIPPED_STEPS = 10  # 16-mixed: consecutive non-finite steps GradScaler may skip before training stops


class SCGANModule(L.LightningModule):
    """Trains G = encoder1 -> decoder -> encoder2 against D on augmented normal images.

    ``augmentation`` is the resolved augmentation name (``auto`` already mapped by category kind).
    """

    def __init__(self, config: dict, augmentation: str) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts and strings only: checkpoints load with weights_only=True
        self.cfg = config_from_dict(config)
        cfg = self.cfg
        self.automatic_optimization = False
        self.generator = build_generator(cfg.model)
        self.discriminator = build_discriminator(cfg.model)
        g = torch.Generator().manual_seed(cfg.seed)
        init_weights(self.generator, g)
        init_weights(self.discriminator, g)
        # The learned anomaly head (model.head = seg), trained on the augmentation's masks; None: the paper's SCGAN.
        self.seg_head = build_head(cfg.model)
        self.augment = build_augmentation(augmentation, cfg.augment.n_patches, cfg.augment.patch_area,
                                          **cfg.augment.options())
        self.adversarial = ADVERSARIAL_LOSSES[cfg.loss.adv_type]
        self.target = RESTORATION_TARGETS[cfg.loss.con_target]
        self.weights = LossWeights(cfg.loss.w_enc, cfg.loss.w_con, cfg.loss.w_adv, cfg.loss.w_ssim)
        self.calibration: Calibration | None = None
        self.d_resets = 0
        self._fitter: CalibrationFitter | None = None
        self.skipped_steps = 0  # 16-mixed: steps with a non-finite loss, left to GradScaler to skip
        self._nonfinite_run = 0

    def parts(self) -> dict[str, torch.nn.Module]:
        """The networks a model file stores: the generator and, with a head, the head (not the discriminator)."""
        return {"generator": self.generator, **({"seg_head": self.seg_head} if self.seg_head is not None else {})}

    def scorer(self) -> Scorer:
        """A scorer over this module's networks (not a child module: checkpoints hold each weight once)."""
        return build_scorer(self.cfg, self.generator, calibration=self.calibration,
                            seg_head=self.seg_head).to(self.device)

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        betas = (t.beta1, t.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=t.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr, betas=betas)
        if self.seg_head is None:
            return opt_g, opt_d
        # The head is a plain segmentation network: Adam's usual betas (DRAEM), not the GAN's 0.5.
        return opt_g, opt_d, torch.optim.Adam(self.seg_head.parameters(), lr=t.lr)

    def on_train_epoch_start(self) -> None:
        # train.lr_milestones: a function of the epoch alone, so a resumed run continues the same schedule.
        lr = self.cfg.train.lr * self.cfg.train.lr_factor(self.current_epoch, self.trainer.max_epochs)
        for opt in self.optimizers():
            for group in opt.param_groups:
                group["lr"] = lr

    def _check_finite(self, terms: dict[str, torch.Tensor], batch_idx: int) -> bool:
        """True if every loss term is finite. Else, under 16-mixed, count the step and let GradScaler skip it
        (it lowers its scale) unless that happened MAX_SKIPPED_STEPS times in a row; otherwise stop training."""
        bad = {name: v for name, v in terms.items() if not torch.isfinite(v).all()}
        if not bad:
            return True
        if self.cfg.runtime.precision == "16-mixed" and self._nonfinite_run < MAX_SKIPPED_STEPS:
            self._nonfinite_run += 1
            self.skipped_steps += 1
            return False
        name, value = next(iter(bad.items()))
        raise NonFiniteLossError(
            f"loss {name} became {value.item()} at epoch {self.current_epoch}, step {batch_idx} "
            f"(global step {self.global_step}); the last checkpoint is kept — lower lr or check the data"
        )

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d, *opt_h = self.optimizers()
        x = batch["image"]  # (B, 3, S, S) clean normal images in [-1, 1]
        if self.cfg.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Augmentation randomness depends on (seed, epoch, batch, rank) only: resumes are exact.
        gen = seeded_generator(x.device, self.cfg.seed, self.current_epoch, batch_idx, self.global_rank)
        aug = self.augment.apply(x, generator=gen)
        x_aug = aug.image
        target = self.target(x, x_aug)

        out = self.generator(x_aug)
        # D's weights are left out of G's graph: their gradients would be discarded (opt_d zeroes them
        # first), and not computing them saves ~5% of a step without changing any number.
        self.discriminator.requires_grad_(False)
        fake = self.discriminator(out.x_hat)
        self.discriminator.requires_grad_(True)  # the graph is built: D(x^) stays without D's weights
        # D(x) serves both steps where G's loss needs it: G's step leaves D's weights as they are, so D's
        # step would only recompute the same numbers (one D forward of ~18 per step saved).
        real = self.discriminator(x) if self.adversarial.needs_real else None
        g_loss = generator_loss(out, target, adversarial_term(self.cfg.loss.adv_type, real, fake), self.weights)
        g_finite = self._check_finite({f"generator/{k}": v for k, v in g_loss.terms().items()}, batch_idx)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss.total)
        opt_g.step()

        real_logit = (real if real is not None else self.discriminator(x)).logit
        d_loss = discriminator_loss(real_logit, self.discriminator(out.x_hat.detach()).logit)
        d_finite = self._check_finite({"discriminator": d_loss}, batch_idx)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        h_finite, seg_loss = True, None
        if self.seg_head is not None:
            # The head learns where the augmentation changed pixels, from (x~, x^); x^ is detached, so G trains
            # exactly as without a head.
            logits = self.seg_head(x_aug, out.x_hat.detach())
            seg_loss = focal_loss(logits, aug.mask.float(), gamma=self.cfg.loss.focal_gamma)
            h_finite = self._check_finite({"head/focal": seg_loss}, batch_idx)
            opt_h[0].zero_grad(set_to_none=True)
            self.manual_backward(self.cfg.loss.w_seg * seg_loss)
            opt_h[0].step()
        if g_finite and d_finite and h_finite:
            self._nonfinite_run = 0
        # The reset decision is taken on the mean over ranks, so that under DDP all ranks reset D together.
        d_mean = self.trainer.strategy.reduce(d_loss.detach().clone(), reduce_op="mean")  # reduce works in place
        if d_mean.item() < self.cfg.train.d_reset_threshold:
            # D has collapsed (GANomaly): start it afresh so G keeps an adversarial signal.
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + self.global_step)
            init_weights(self.discriminator, gen)
            self.d_resets += 1

        logs = {f"train/{k}": v.detach() for k, v in g_loss.terms().items()}
        logs["train/d_loss"] = d_loss.detach()
        if seg_loss is not None:
            logs["train/seg"] = seg_loss.detach()
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log("loss_g", g_loss.total.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def on_train_epoch_end(self) -> None:
        # d_resets and the calibration are identical on every rank (resets are decided on the mean D loss,
        # buffers are broadcast before validation); sync_dist=True averages equal values, harmlessly.
        self.log("train/d_resets", float(self.d_resets), on_epoch=True, sync_dist=True)

    # ---- validation: normal images only, used for calibration -------------------------------
    def on_validation_epoch_start(self) -> None:
        self._broadcast_buffers()
        self._fitter = CalibrationFitter(self.scorer(), self.cfg)

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
        buffers = [b for _, b in self.named_buffers() if b.is_floating_point()]
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        for b, v in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(v.view_as(b))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._fitter.add(batch["image"], batch_idx)

    def on_validation_epoch_end(self) -> None:
        broadcast = None
        if self.trainer.world_size > 1:
            def broadcast(obj):
                return self.trainer.strategy.broadcast(obj, src=0)
        cal = self._fitter.fit(broadcast) if self._fitter is not None else None
        self._fitter = None
        if cal is None:
            return
        self.calibration = cal
        if not self.trainer.sanity_checking:
            name = cal.resolve(self.cfg.score.default_score, SCORE_PREFERENCE)
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


__all__ = ["NonFiniteLossError", "SCGANModule"]
