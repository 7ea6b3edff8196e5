"""Lightning data module: the training and validation (normal only) splits of one category."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from scgan.config import Config
from scgan.data.datasets import AnomalyDataset, dataset_for
from scgan.models.registry import get_kind


class SCGANDataModule(L.LightningDataModule):
    """Builds the datasets once; the train loader shards by rank with an epoch-seeded sampler.

    Sharding is ours (``Trainer(use_distributed_sampler=False)``): every rank sees a disjoint part of
    each epoch, ordered by (seed, epoch) alone, so an interrupted run resumes on the same order. The
    validation split is small and normal-only; every rank scores all of it, so the calibration fitted
    from it is identical on every rank.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self._datasets: dict[str, AnomalyDataset] = {}

    def dataset(self, split: str) -> AnomalyDataset:
        """The split's dataset, built (decoded and cached) on first use."""
        if split not in self._datasets:
            spec = get_kind(self.cfg.kind).input_spec(self.cfg)
            self._datasets[split] = dataset_for(self.cfg.data, split, spec)
        return self._datasets[split]

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        world, rank = self._world()
        per_rank = len(ds) // world
        batch = min(self.cfg.train.batch_size, per_rank)
        if batch < 2:
            raise ValueError(
                f"{len(ds)} training images over {world} device(s) leave fewer than 2 per batch; "
                "BatchNorm needs at least 2 — add images or use fewer devices"
            )
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                     seed=self.cfg.seed, drop_last=True)
        # drop_last: a last batch of one image would break BatchNorm (SPEC section 8).
        return DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.runtime.num_workers, persistent_workers=self.cfg.runtime.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.cfg.runtime.eval_batch_size, shuffle=False,
                          num_workers=self.cfg.runtime.num_workers)
