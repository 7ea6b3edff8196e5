"""Image AUROC against training cost: train a preset, keeping a checkpoint every k epochs, then score each.

The curve describes what reaching a given AUROC costs in CPU time; it never selects a model. The
reported model stays the last epoch (``model.pt``, as ``scgan train`` writes it), and every checkpoint
is scored only after training has finished, on the test split, with the calibration it carries.

CPU time is this process's user + system time (all threads) from the start of training, read at the
end of each epoch (so it includes the per-epoch validation pass that calibrates); wall time is
recorded beside it. Scoring the checkpoints afterwards is not counted.

    python studies/scgan_head/time_to_quality.py --root ../shared/data/mvtec_ad --category bottle --every 5 \\
        --output results/time_to_quality/bottle                      # cpu preset: 40 epochs
    python studies/scgan_head/time_to_quality.py --quick --output /tmp/ttq   # demo data, 2 epochs, ~1 min

Writes ``curve.json``, ``curve.md`` and ``curve.png`` to ``--output``; the training run (weights) and
the per-checkpoint scores go to ``--work`` (default ``runs/time_to_quality/CATEGORY_seedSEED``, which
git ignores). A second call with the same work folder reuses the finished training and only scores
again (``--retrain`` starts over).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from scgan.artifacts.model_file import load_model
from scgan.config import Config, load_config, parse_overrides, to_yaml
from scgan.inference.evaluate import run_test
from scgan.training.fit import train
from scgan.training.outdir import MODEL_FILE
from scgan.utils.runinfo import cpu_model, git_commit
from scgan.utils.tables import num

COST_FILE = "cost.json"
# A configuration small enough to train in seconds (as the test suite's): for --quick only.
QUICK = {"model.image_size": 32, "model.base_channels": 8, "model.max_channels": 32, "model.nz": 16,
         "train.epochs": 2, "train.batch_size": 8, "runtime.eval_batch_size": 8, "augment.n_patches": 5,
         "augment.patch_area": 0.02, "train.steps": 0}


class CostClock(L.Callback):
    """Cumulative CPU and wall seconds since the start of training, at the end of every epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._cpu0 = self._wall0 = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append({"epoch": trainer.current_epoch, "cpu_s": time.process_time() - self._cpu0,
                            "wall_s": time.perf_counter() - self._wall0})


def train_with_clock(cfg: Config, work: Path, threads: int) -> dict[str, Any]:
    """Train (fresh: an earlier run there is deleted) into work/train; return and write the per-epoch cost log."""
    clock = CostClock()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = train(cfg, work / "train", progress=True, callbacks=[clock], overwrite=True)
    cost = {"epochs": clock.epochs, "threads": threads, "total_cpu_s": time.process_time() - cpu0,
            "total_wall_s": time.perf_counter() - wall0, "train_epochs": res.epochs,
            "note": "cpu_s/wall_s per epoch count from the start of training; total_* include loading the data"}
    (work / COST_FILE).write_text(json.dumps(cost, indent=2))
    return cost


def checkpoints(train_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of every epoch-k checkpoint, then the reported model (the last epoch)."""
    found = sorted((train_dir / "checkpoints").glob("epoch*.ckpt"))
    return [(p.stem, p) for p in found] + [("final", train_dir / MODEL_FILE)]


def score_all(work: Path, cost: dict[str, Any]) -> list[dict[str, Any]]:
    """Score every checkpoint on the test split; one row per checkpoint with its training cost."""
    by_epoch = {e["epoch"]: e for e in cost["epochs"]}
    last_epoch = max(by_epoch)
    rows: list[dict[str, Any]] = []
    for name, path in checkpoints(work / "train"):
        loaded = load_model(path)
        # Lightning checkpoints store the 0-based epoch they were saved in; model.pt is the last epoch.
        epoch = last_epoch if name == "final" else int(loaded.meta.get("epoch", -1))
        if name != "final" and epoch == last_epoch:
            continue  # the same weights as the reported model, listed once as "final"
        t, c = time.perf_counter(), time.process_time()
        m = run_test(loaded, work / "scores" / name, report=False, progress=False).metrics
        row = {"checkpoint": name, "epochs_trained": epoch + 1, "cpu_min": by_epoch[epoch]["cpu_s"] / 60,
               "wall_min": by_epoch[epoch]["wall_s"] / 60, "reported_model": name == "final",
               "image_auroc": {s: v["image_auroc"] for s, v in m["scores"].items()},
               "pixel_auroc": m.get("pixel_auroc"), "aupro": m.get("aupro"), "default_score": m.get("default_score"),
               "pixel_metrics_resolution": m.get("pixel_metrics_resolution"),
               "scoring_s": time.perf_counter() - t, "scoring_cpu_s": time.process_time() - c}
        rows.append(row)
        print(f"{name}: epoch {epoch + 1}, {row['cpu_min']:.1f} CPU min, image AUROC "
              + ", ".join(f"{s} {v:.3f}" for s, v in row["image_auroc"].items()), flush=True)
    return rows


def _fmt(v: Any) -> str:
    return num(v, 3, missing="-")


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0]["image_auroc"]) if rows else []


def markdown(rows: list[dict[str, Any]], cost: dict[str, Any], cfg: Config) -> str:
    names = _names(rows)
    head = ["epochs", "CPU min", "wall min", *(f"image AUROC {s}" for s in names), "default score", "pixel AUROC",
            "AUPRO"]
    lines = [f"Time to quality: {cfg.data.category} ({cfg.data.dataset}), preset {cfg.preset}, seed {cfg.seed}, "
             f"{cost['threads']} threads. The reported model is the last epoch; earlier rows only show the cost.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ep = f"{r['epochs_trained']} (reported)" if r["reported_model"] else str(r["epochs_trained"])
        lines.append("| " + " | ".join([ep, f"{r['cpu_min']:.1f}", f"{r['wall_min']:.1f}",
                                        *(_fmt(r["image_auroc"][s]) for s in names), str(r["default_score"]),
                                        _fmt(r["pixel_auroc"]), _fmt(r.get("aupro"))]) + " |")
    final = next((r for r in rows if r["reported_model"]), None)
    test_cpu = final["scoring_cpu_s"] / 60 if final and "scoring_cpu_s" in final else float("nan")
    res = final.get("pixel_metrics_resolution") if final else None
    lines += ["", f"Total: {cost['total_cpu_s'] / 60:.1f} CPU minutes, {cost['total_wall_s'] / 60:.1f} wall minutes "
                  f"(training, including loading the data and per-epoch validation); testing the reported model: "
                  f"{test_cpu:.1f} CPU minutes. Pixel metrics at {res} px (the masks' stored resolution)."]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], cfg: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, label in ((axes[0], "epochs_trained", "epochs trained"), (axes[1], "cpu_min", "CPU minutes")):
        for s in _names(rows):
            xs = [r[key] for r in rows]
            ys = [r["image_auroc"][s] if r["image_auroc"][s] is not None else float("nan") for r in rows]
            ax.plot(xs, ys, marker="o", label=s)
        final = next(r for r in rows if r["reported_model"])
        ax.axvline(final[key], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("image AUROC (test)")
    axes[1].legend(title="score", loc="best")
    fig.suptitle(f"{cfg.data.category}: image AUROC vs training cost (preset {cfg.preset}, seed {cfg.seed}; "
                 "reported model = last epoch, dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/mvtec_ad", help="dataset root (the folder of categories)")
    p.add_argument("--category", default="bottle")
    p.add_argument("--dataset", default="mvtec")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--every", type=int, default=5, help="keep a checkpoint every k epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--output", required=True, help="folder for curve.{json,md,png} and config.yaml")
    p.add_argument("--work", default=None, help="folder for the training run and per-checkpoint scores "
                                                "(default runs/time_to_quality/CATEGORY_seedSEED; with --quick "
                                                "OUTPUT/work)")
    p.add_argument("--retrain", action="store_true", help="train again even if --output holds a finished run")
    p.add_argument("--quick", action="store_true", help="demo data and a tiny network for 2 epochs (checks the script)")
    p.add_argument("overrides", nargs="*", help="config key=value overrides, e.g. epochs=60")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git_commit()  # fixes the commit every result of this invocation records (see git_commit)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    # Weights and per-checkpoint scores go to a work folder (under runs/, which git ignores by default);
    # --output gets only the curve files.
    default_work = out / "work" if args.quick else Path("runs") / "time_to_quality" / f"{args.category}_seed{args.seed}"
    work = Path(args.work) if args.work else default_work
    overrides: dict[str, Any] = {}
    root, category, every = args.root, args.category, args.every
    if args.quick:
        from scgan.data.demo import make_demo_dataset

        root, category, every = str(make_demo_dataset(work / "demo", n_train=24, n_test=10, image_size=32)), "washer", 1
        overrides.update(QUICK)
    overrides.update({"data.dataset": args.dataset, "data.root": root, "data.category": category,
                      "train.checkpoint_every": every, "seed": args.seed})
    # The user's key=value overrides come last, so they win.
    cfg = load_config(args.preset, overrides={**overrides, **parse_overrides(args.overrides)})
    done = (work / COST_FILE).exists() and (work / "train" / MODEL_FILE).exists() and not args.retrain
    if done:
        saved = work / "train" / "config.yaml"
        if saved.exists() and saved.read_text() != to_yaml(cfg):
            raise SystemExit(f"{work / 'train'} holds a run with another config than this command's; "
                             "pass --retrain to replace it, or another --work")
        print(f"reusing the finished training in {work / 'train'} (--retrain to start over)", flush=True)
        cost = json.loads((work / COST_FILE).read_text())
    else:
        cost = train_with_clock(cfg, work, torch.get_num_threads())
    rows = score_all(work, cost)
    report = {"config": cfg.to_dict(), "seed": cfg.seed, "work": str(work), "threads": cost["threads"],
              "cost": cost, "rows": rows,
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "git_commit": git_commit(), "cpu": cpu_model(),
              "selection": "last epoch (no model selection); earlier checkpoints only describe the cost"}
    (out / "curve.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "curve.md").write_text(markdown(rows, cost, cfg) + "\n")
    (out / "config.yaml").write_text(to_yaml(cfg))
    plot(rows, cfg, out / "curve.png")
    print(f"\n{markdown(rows, cost, cfg)}\n\nwrote {out / 'curve.png'}, curve.md, curve.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
