"""Exploration, not a product feature: would a per-pixel reference map help the heat maps?

For each trained model given, the mean smoothed residual map of its normal *validation* images is
subtracted from every test map ("minus_mean"), or the maps are z-scored per pixel with the validation
mean and spread ("zscore"); pixel AUROC, AUPRO and the image AUROC of the map's maximum are printed next
to the plain maps'. The reference uses normal validation images only, but this script reads the test
labels to compare: any adoption of the idea must say it was found this way (docs/reproduction.md).

    python studies/heat_maps/explore_map_reference.py runs/time_to_quality/bottle_seed0/train/model.pt ...
"""
from __future__ import annotations

import argparse

from torch.utils.data import DataLoader

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import build_dataset
from scgan.evaluation.metrics import aupro, image_auroc, pixel_auroc
from scgan.models.scoring import score_loader
from scgan.training.datamodule import SCGANDataModule
from scgan.utils.tables import pct


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model.pt files (their config names the dataset)")
    args = p.parse_args(argv)
    for path in args.models:
        model = load_model(path)
        cfg = model.config
        scorer = model.scorer()
        val = score_loader(scorer, DataLoader(SCGANDataModule(cfg).dataset("val"), batch_size=32))
        test_ds = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.category, split="test",
                                spec=cfg.model.image_size)
        test = score_loader(scorer, DataLoader(test_ds, batch_size=32))
        mean = val.maps.mean(0)
        spread = val.maps.std(0) + 1e-3 * val.maps.std()
        row = [f"{path} (pixel metrics at S = {cfg.model.image_size} px)"]
        for name, maps in (("plain", test.maps), ("minus_mean", test.maps - mean),
                           ("zscore", (test.maps - mean) / spread)):
            peak = maps.reshape(len(maps), -1).max(1)
            row.append(f"{name}: pixel AUROC {pct(pixel_auroc(maps, test.masks))}, image AUROC (max) "
                       f"{pct(image_auroc(peak, test.labels))}, AUPRO {pct(aupro(maps, test.masks))}")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
