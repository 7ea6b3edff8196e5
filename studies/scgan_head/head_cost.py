"""CPU cost of one training step: G + D (the cpu preset's SCGAN) beside the learned anomaly head, at 64 and 128 px.

Single-threaded process time per step of a batch of 16 (forward, backward, Adam), the mean of 5 steps after one
warm-up; run it on an idle machine (``uptime``) and read the figures as ratios measured side by side.

    python studies/scgan_head/head_cost.py
"""
from __future__ import annotations

import time

import torch

from scgan.config import get_preset
from scgan.models.scgan.head import SegHead
from scgan.models.scgan.losses import LossWeights, adversarial_term, discriminator_loss, generator_loss
from scgan.models.scgan.networks import build_discriminator, build_generator
from scgan.utils.tables import markdown_table, num


def _timed(step, n: int = 5) -> float:
    step()  # warm-up
    t0 = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - t0) / n


def gd_step_s(size: int, batch: int = 16) -> float:
    cfg = get_preset("cpu")
    cfg.model.image_size = size
    g, d = build_generator(cfg.model), build_discriminator(cfg.model)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    x = torch.rand(batch, 3, size, size) * 2 - 1

    def step() -> None:
        out = g(x)
        real = d(x)
        loss = generator_loss(out, x, adversarial_term("feature", real, d(out.x_hat)), LossWeights())
        opt_g.zero_grad()
        loss.total.backward()
        opt_g.step()
        dl = discriminator_loss(real.logit.detach(), d(out.x_hat.detach()).logit)
        opt_d.zero_grad()
        dl.backward()
        opt_d.step()

    return _timed(step)


def head_step_s(size: int, width: int, depth: int = 3, batch: int = 16) -> float:
    head = SegHead(6, width, depth)
    opt = torch.optim.Adam(head.parameters())
    x = torch.rand(batch, 3, size, size) * 2 - 1

    def step() -> None:
        loss = head(x, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _timed(step)


def main() -> None:
    torch.set_num_threads(1)
    rows = [[str(size), num(gd_step_s(size), 3), num(head_step_s(size, 16), 3), num(head_step_s(size, 32), 3)]
            for size in (64, 128)]
    print(markdown_table(["S", "G + D step (s)", "head width 16 (s)", "head width 32 (s)"], rows))


if __name__ == "__main__":
    main()
