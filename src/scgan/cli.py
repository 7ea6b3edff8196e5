"""The ``scgan`` command: a thin layer over the package's functions. Errors become one line and exit 1."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scgan import __version__

DEFAULT_PRESET = "default"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"named preset: default, cpu, gpu or paper (default {DEFAULT_PRESET})")
    p.add_argument("--config", dest="config_file", help="YAML file of config overrides (nested by section or flat)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. image_size=64 epochs=40 seed=0 (see 'scgan config')")


def _add_data_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--dataset", choices=["mvtec", "btad", "folder"], default=None,
                   help="dataset layout (default: mvtec)" if required else "dataset layout (default: the checkpoint's)")
    p.add_argument("--root", required=required, help="dataset root folder")
    p.add_argument("--category", default=None, help="MVTec category or BTAD product (01, 02, 03)")


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", help="Lightning accelerator: cpu (default), gpu, auto")
    p.add_argument("--devices", help="number of devices (or 'auto')")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--precision", help="32-true (default), bf16-mixed, 16-mixed (GPU)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scgan",
        description="SCGAN anomaly detection: train on normal images, score new ones, reproduce the paper.",
    )
    parser.add_argument("--version", action="version", version=f"scgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on normal images of one category")
    _add_data_options(p, required=True)
    p.add_argument("--output", required=True, help="output folder (checkpoints, logs, model.pt)")
    p.add_argument("--resume", help="resume from a checkpoint path, or 'auto' for OUTPUT/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the training run OUTPUT holds, then train anew (without it such a folder is refused)")
    p.add_argument("--test", action="store_true", help="run 'scgan test' on the test split after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_device_options(p)
    _add_run_options(p)

    p = sub.add_parser("test", help="score the test split; write metrics.json, scores.csv and a report")
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--output", required=True, help="output folder")
    _add_data_options(p, required=False)
    p.add_argument("--image-level-only", action="store_true", help="allow anomalous images without masks")
    p.add_argument("--no-report", action="store_true", help="skip report.md / report.html")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("predict", help="score image files or folders; CSV of scores and decisions + overlays")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt or .ckpt")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("serve", help="serve a model over HTTP: POST /predict, GET /model, GET /health, a web page at /")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="model.pt, a .ckpt, or an ONNX file written by 'scgan export'")
    src.add_argument("--onnx", help="an ONNX model written by 'scgan export' (runs without torch)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=_positive_int, default=1, help="scoring threads (default 1)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for a worker; more get 503 (default 8)")
    p.add_argument("--max-upload-mb", type=_positive_int, default=20, help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=_positive_int, default=40_000_000,
                   help="largest image, width x height (default 40,000,000)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait and score (default 60)")

    p = sub.add_parser("demo", help="write the built-in demo data, train briefly, test, report")
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--category", default=None, help="demo category (default: the object-like one)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier demo's training run in OUTPUT/train")
    p.add_argument("--no-progress", action="store_true")
    _add_run_options(p)

    p = sub.add_parser("config", help="print the resolved config as YAML")
    _add_run_options(p)

    for name, helptext in (("benchmark", "train + test categories x seeds; a table like the paper's Table 1/2"),
                           ("ablate", "one of the paper's ablation studies over categories x seeds")):
        p = sub.add_parser(name, help=helptext)
        if name == "ablate":
            p.add_argument("study", choices=["n_patches", "structure", "augmentation", "loss_weights", "beta"],
                           help="n_patches (Table 3), structure (Tables 4-5), augmentation (Table 6), "
                                "loss_weights (Fig. 10), beta (Fig. 11; re-scores the base runs)")
        p.add_argument("--dataset", choices=["mvtec", "btad"], default="mvtec")
        p.add_argument("--root", required=True, help="dataset root holding the category folders")
        p.add_argument("--categories", help="comma-separated (default: every category found under --root)")
        p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
        p.add_argument("--results", default="results", help="results folder (default results/)")
        p.add_argument("--name", help="sub-folder for the tables (default <study>_<dataset>)")
        p.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
        p.add_argument("--threads", type=int, default=None,
                       help="torch threads per run (default: cores / jobs); results depend on it, never on --jobs")
        p.add_argument("--no-progress", action="store_true")
        _add_run_options(p)

    p = sub.add_parser("calibrate", help="re-fit a trained model's calibration on a folder of normal images")
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--normal", required=True, help="folder of normal images (searched recursively)")
    p.add_argument("--output", required=True, help="the new model file (may be the checkpoint itself)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="score settings, e.g. threshold_quantile=0.995 default_score=map_max")

    p = sub.add_parser("export", help="export the scoring graph (image batch -> scores, maps)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    for command_parser in sub.choices.values():  # so that main() can show a subcommand's own usage
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def _config(args: argparse.Namespace, extra: dict | None = None, base: dict | None = None):
    """Preset, YAML, then ``base`` defaults, the user's key=value overrides, then ``extra`` (from flags)."""
    from scgan.config import load_config, parse_overrides

    overrides = dict(base or {})
    overrides.update(parse_overrides(args.overrides))
    overrides.update(extra or {})
    return load_config(args.preset, args.config_file, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from scgan.training.fit import train

    extra: dict = {"data.root": args.root}
    if args.dataset is not None:  # else the preset / YAML / key=value value stands (mvtec by default)
        extra["data.dataset"] = args.dataset
    if args.category is not None:
        extra["data.category"] = args.category
    for key in ("accelerator", "devices", "strategy", "precision"):
        if getattr(args, key) is not None:
            extra[f"runtime.{key}"] = getattr(args, key)
    cfg = _config(args, extra)
    res = train(cfg, args.output, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if res.model_path is None:
        return 0
    print(f"model written to {res.model_path} ({res.epochs} epochs, {res.wall_time_s:.0f} s)")
    _print_calibration(res.model_path)
    if args.test:
        return _test(res.model_path, Path(args.output) / "test", progress=not args.no_progress)
    return 0


# Fewer normal validation images than this make thresholds and normalisation rough.
def _print_calibration(model_path: Path) -> None:
    """How the trained model decides: its score (and why), threshold, and the validation images behind them."""
    from scgan.checkpoint import load_model

    loaded = load_model(model_path)
    cal, name = loaded.calibration, loaded.default_score
    if cal is None:
        print(f"score {name}; no calibration (no validation images): predict gives scores but no decisions")
        return
    if loaded.config.score.default_score == "auto" and name in cal.selection:
        mean = f"mean over strengths {', '.join(cal.selection_by_strength)}, " if cal.selection_by_strength else ""
        why = (f"chosen by 'auto': separates synthetic defects from normal validation images with AUROC "
               f"{cal.selection[name]:.3f} ({mean}margin {cal.selection_margin.get(name, float('nan')):.2f} "
               f"normal spreads)")
    else:
        why = "set by default_score"
    print(f"score {name} ({why})")
    print(f"threshold {cal.scores[name].threshold:.4g}: the {cal.quantile:g} quantile of {name} on "
          f"{cal.n_images} normal validation image(s)")
    from scgan.data.datasets import calibration_warning

    small = calibration_warning(cal.n_images)  # the one rule, shared with training and test
    if small:
        print(f"warning: {small}", file=sys.stderr)


def _print_metrics(m: dict, out: Path) -> None:
    from scgan.utils.tables import pct

    shown = {k: pct(m[k], unit="%") for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    print(f"image AUROC {shown['image_auroc']} | pixel AUROC {shown['pixel_auroc']} | "
          f"AUPRO {shown['aupro']} | F1-max {shown['f1_max']}  (score: {m['default_score']})")
    others = ", ".join(f"{k} {pct(v['image_auroc'], unit='%')}" for k, v in m["scores"].items())
    print(f"image AUROC per score: {others}")
    print(f"results: {out / 'metrics.json'}" + (f", report: {out / 'report.html'}" if (out / "report.html").exists() else ""))


def _test(checkpoint, output, progress: bool = True, **kw) -> int:
    from scgan.evaluate import run_test

    res = run_test(checkpoint, output, progress=progress, **kw)
    _print_metrics(res.metrics, res.output_dir)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    return _test(args.checkpoint, args.output, progress=not args.no_progress, root=args.root,
                 category=args.category, dataset=args.dataset, report=not args.no_report,
                 require_masks=False if args.image_level_only else None)


def cmd_predict(args: argparse.Namespace) -> int:
    from scgan.predict import run_predict

    res = run_predict(args.inputs, args.output, model=args.checkpoint, onnx_path=args.onnx,
                      batch_size=args.batch_size, overlays=not args.no_overlays, progress=not args.no_progress)
    # Each skipped file was already reported on stderr (a warning) and in the CSV with its reason.
    if not res.predictions:  # exit 0 needs at least one scored image
        raise ValueError(f"none of the {len(res.skipped)} input file(s) could be read as an image; "
                         f"the reasons are in {res.csv_path}")
    n_anom = sum(bool(p.anomalous) for p in res.predictions)
    print(f"scored {len(res.predictions)} image(s), {n_anom} anomalous; skipped {len(res.skipped)} unreadable; "
          f"results: {res.csv_path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from scgan.detector import Detector
    from scgan.serve import Limits, serve

    detector = Detector.load(args.onnx or args.checkpoint, backend="onnx" if args.onnx else None)
    limits = Limits(max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels,
                    workers=args.workers, queue=args.queue, timeout_s=args.timeout)
    print(f"serving {detector.path} ({detector.backend}) on http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    serve(detector, host=args.host, port=args.port, limits=limits)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from scgan.demo_run import DEMO_OVERRIDES, run_demo

    cfg = _config(args, base={**DEMO_OVERRIDES})
    res = run_demo(cfg, args.output, category=args.category, progress=not args.no_progress, overwrite=args.overwrite)
    _print_metrics(res.metrics, res.output_dir)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from scgan.config import to_yaml

    print(to_yaml(_config(args)), end="")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from scgan.experiments.runs import default_threads
    from scgan.experiments.studies import run_study
    from scgan.utils.runinfo import command_line

    cfg = _config(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    study = "benchmark" if args.command == "benchmark" else args.study
    out = run_study(study, cfg, dataset=args.dataset, root=args.root, categories=cats, seeds=seeds,
                    results=Path(args.results), name=args.name, jobs=args.jobs,
                    threads=args.threads or max(1, default_threads() // args.jobs), command=command_line(),
                    progress=not args.no_progress)
    print((out / "table.md").read_text())
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from scgan.calibration.fit import recalibrate
    from scgan.config import parse_overrides

    from scgan.checkpoint import load_model

    path, cal = recalibrate(args.checkpoint, args.normal, args.output, parse_overrides(args.overrides))
    default = load_model(path).default_score
    print(f"calibration fitted on {cal.n_images} normal image(s); default score {default}, threshold "
          f"{cal.scores[default].threshold:.6g} (quantile {cal.quantile}); written to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from scgan.export import export_onnx

    path = export_onnx(args.checkpoint, args.output, opset=args.opset)
    print(f"ONNX model written to {path}")
    return 0


COMMANDS = {"train": cmd_train, "test": cmd_test, "predict": cmd_predict, "serve": cmd_serve, "demo": cmd_demo,
            "config": cmd_config, "calibrate": cmd_calibrate, "export": cmd_export, "benchmark": cmd_study,
            "ablate": cmd_study}


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's own usage, not the top level's, and a hint for key=value where none is taken
        command_parser = getattr(args, "command_parser", parser)
        hint = ""
        if any("=" in e and not e.startswith("-") for e in extra) and args.command in ("test", "predict", "serve",
                                                                                       "export"):
            hint = (f"; 'scgan {args.command}' takes no key=value settings (the model's config is used), "
                    "only the options above")
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from scgan.utils.runinfo import git_commit

    git_commit()  # results record the commit this invocation started from, not the one HEAD is at when it ends
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("scgan: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — the CLI's one clean line; --debug shows the traceback
        if args.debug:
            raise
        print(f"scgan {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))  # 1, or the signal's code for a stopped training (143, 130)


if __name__ == "__main__":
    sys.exit(main())
