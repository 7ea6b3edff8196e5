"""How well does a trained model restore saturated pixels? Normal validation images only.

For each model.pt given, prints the mean residual |x - G(x)| (averaged over channels, in the [-1, 1]
pixel scale) of its normal validation images at pixels whose value is saturated in every channel
(all channels >= 0.99: pure white; all <= -0.99: pure black) and at all other pixels, and the
restoration's value there. No test image or label is read.

    python studies/heat_maps/saturated_residual.py results/runs/mvtec_bottle/*_seed0/train/model.pt
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from scgan.artifacts.model_file import load_model
from scgan.training.datamodule import SCGANDataModule


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model.pt files (their config names the dataset)")
    args = p.parse_args(argv)
    print("model | output_scale | saturated share of pixels | residual at saturated | residual elsewhere | "
          "mean restoration at pure white")
    for path in args.models:
        model = load_model(path)
        gen = model.parts["generator"].eval()
        sat_res, other_res, white_hat, n_sat, n_all, n_white = 0.0, 0.0, 0.0, 0, 0, 0
        for batch in DataLoader(SCGANDataModule(model.config).dataset("val"), batch_size=32):
            x = batch["image"]
            x_hat = gen(x).x_hat
            res = (x - x_hat).abs().mean(1)
            white, black = (x >= 0.99).all(1), (x <= -0.99).all(1)
            sat = white | black
            sat_res += res[sat].sum().item()
            other_res += res[~sat].sum().item()
            white_hat += x_hat.mean(1)[white].sum().item()
            n_sat, n_all, n_white = n_sat + int(sat.sum()), n_all + sat.numel(), n_white + int(white.sum())
        sat_mean = sat_res / n_sat if n_sat else float("nan")
        white_mean = white_hat / n_white if n_white else float("nan")
        print(f"{path} | {model.config.model.output_scale:g} | {n_sat / n_all:.3f} | {sat_mean:.4f} | "
              f"{other_res / (n_all - n_sat):.4f} | {white_mean:.3f}", flush=True)


if __name__ == "__main__":
    main()
