"""One place that seeds every random generator."""
from __future__ import annotations

import torch


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (and Lightning's worker seeding); return the seed."""
    from lightning.pytorch import seed_everything as _lightning_seed

    return _lightning_seed(int(seed), workers=True, verbose=False)


def seeded_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator whose state depends only on the given integers (seed, epoch, step, rank ...)."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
