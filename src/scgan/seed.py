"""One place that seeds every random generator."""
from __future__ import annotations


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (and Lightning's worker seeding); return the seed."""
    from lightning.pytorch import seed_everything as _lightning_seed

    return _lightning_seed(int(seed), workers=True, verbose=False)
