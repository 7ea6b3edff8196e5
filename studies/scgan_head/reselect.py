"""Which score ``auto`` picks under other selection settings, for models already trained: no training.

For each model, the calibration is re-fitted on the model's own normal validation split (the images training
calibrated on) with the given score settings (e.g. ``score.selection_strengths=1,0.5,0.25``), once as the
model was trained and once with the overrides, and the two picks are printed side by side. No test image is
involved in either pick. Then, as an observation only, each pick's image AUROC on the test set is read from
the run's ``curve.json`` (``studies/scgan_head/time_to_quality.py``), with the best test score beside it: an oracle
that no model may use.

    python studies/scgan_head/reselect.py --runs runs/detection_default --curves results/detection_default \\
        --output results/table1_detection/reselect score.selection_strengths=1,0.5,0.25
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scgan.artifacts.model_file import load_model
from scgan.config.overrides import parse_overrides
from scgan.inference.calibrate import calibrate, recalibration_config
from scgan.training.datamodule import SCGANDataModule
from scgan.utils.atomic import atomic_write_text
from scgan.utils.runinfo import run_info
from scgan.utils.tables import markdown_table, pct


def validation_loader(cfg, batch_size: int) -> DataLoader:
    """The model's own normal validation split, built as training built it, in the batches training scored it
    in: the confetti are seeded per batch, so ``batch_size`` must be the run's ``runtime.eval_batch_size``."""
    return DataLoader(SCGANDataModule(cfg).dataset("val"), batch_size=batch_size, shuffle=False)


def reselect(model_path: Path, overrides: dict[str, str], batch_size: int = 32) -> dict:
    """The calibration's pick as trained and with ``overrides``, both re-fitted on the validation split."""
    loaded = load_model(model_path)
    loader = validation_loader(loaded.config, batch_size)
    out = {}
    for label, over in (("as_trained", {}), ("new", overrides)):
        try:
            cfg = recalibration_config(loaded.config, over)
        except ValueError as e:
            raise SystemExit(f"reselect.py: {e}") from None
        cal = calibrate(loaded.scorer(), loader, cfg)
        out[label] = {"selected": cal.selected_score, "separation_auroc": cal.selection,
                      "by_strength": cal.selection_by_strength}
    out["stored_selected"] = loaded.calibration.selected_score if loaded.calibration else None
    out["n_val"] = len(loader.dataset)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="folder of <category>_seed<k>/train/model.pt")
    p.add_argument("--curves", type=Path, required=True, help="folder of <category>_seed<k>/curve.json")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32,
                   help="the runs' runtime.eval_batch_size (model files do not store it; default 32, the presets')")
    p.add_argument("overrides", nargs="+", help="score settings, e.g. score.selection_strengths=1,0.5,0.25")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.overrides)
    models = sorted(args.runs.glob("*/train/model.pt"))
    if not models:
        print(f"reselect.py: no */train/model.pt under {args.runs}", file=sys.stderr)
        return 1
    rows, records = [], []
    for path in models:
        run = path.parent.parent.name
        curve = args.curves / run / "curve.json"
        if not curve.exists():
            print(f"reselect.py: {curve} missing; skipping {run}", file=sys.stderr)
            continue
        final = next((r for r in json.loads(curve.read_text())["rows"] if r["reported_model"]), None)
        if final is None:
            print(f"reselect.py: {curve} has no reported model; skipping {run}", file=sys.stderr)
            continue
        test = final["image_auroc"]
        r = reselect(path, overrides, args.batch_size)
        if r["as_trained"]["selected"] != r["stored_selected"]:
            print(f"reselect.py: {run}: re-fitting as trained picked {r['as_trained']['selected']}, the stored "
                  f"calibration {r['stored_selected']}", file=sys.stderr)
        best = max(test, key=test.get)
        old, new = r["as_trained"]["selected"], r["new"]["selected"]
        rows.append([run, r["n_val"], old, pct(test[old]), new, pct(test[new]), best, pct(test[best])])
        records.append({"run": run, **r, "test_image_auroc": test})
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    header = ["run", "val images", "auto as trained", "its test AUROC", "auto with overrides", "its test AUROC",
              "best on test (oracle)", "its AUROC"]
    new_matches = sum(r[4] == r[6] for r in rows)
    old_matches = sum(r[2] == r[6] for r in rows)
    text = (f"# `auto` re-fitted with {' '.join(args.overrides)}\n\n"
            f"Models: `{args.runs}`; each calibration re-fitted on the model's own normal validation split. "
            f"Test AUROCs (image, %) from `{args.curves}/<run>/curve.json`, read after both picks were made.\n\n"
            + markdown_table(header, rows)
            + f"\n\nThe pick matched the best test score in {old_matches} of {len(rows)} runs as trained, "
              f"{new_matches} of {len(rows)} with the overrides (an observation, never used to choose).\n")
    atomic_write_text(args.output / "reselect.md", text)
    info = run_info(command="python studies/scgan_head/reselect.py " + " ".join(argv or sys.argv[1:]))
    atomic_write_text(args.output / "reselect.json", json.dumps(
        {"info": info, "runs_folder": str(args.runs), "curves_folder": str(args.curves), "runs": records}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
