"""``scgan calibrate``: re-fit a trained model's calibration on a folder of normal images."""
from __future__ import annotations

import argparse
import logging

from scgan.utils.lazy import lazy_exports

HELP = "re-fit a trained model's calibration on a folder of normal images"

log = logging.getLogger("scgan")

# The work is scgan.inference.recalibrate's; its entry is named here too, imported on first use (not at CLI start).
__getattr__ = lazy_exports(__name__, {"recalibrate": "scgan.inference.recalibrate"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--normal", help="folder of normal images (searched recursively; at least 5, 20 or more for a "
                                    "sound threshold); default: the normal images the model file keeps")
    p.add_argument("--output", required=True, help="the new model file (may be the model file itself, never the "
                                                   "Lightning checkpoint it was read from)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="score settings, e.g. threshold_quantile=0.995 default_score=map_max; "
                        "skip_bad_images=true skips unreadable images")
    p.add_argument("--defects", metavar="DIR", help="a folder of defective images (or a feedback folder: its "
                                                    "missed defects) to set the threshold from, with --catch or "
                                                    "--false-alarms")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--catch", type=float, metavar="RATE", help="with --defects: the share of defects to catch")
    target.add_argument("--false-alarms", type=float, metavar="RATE",
                        help="with --defects: the share of normal images that may be flagged")


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.model_file import load_model
    from scgan.config import parse_overrides
    from scgan.inference.recalibrate import recalibrate, threshold_warnings

    if (args.catch is not None or args.false_alarms is not None) and not args.defects:
        raise ValueError("--catch and --false-alarms set the threshold from defective images: give --defects DIR")
    path, cal, target = recalibrate(args.checkpoint, args.normal, args.output, parse_overrides(args.overrides),
                                    defects=args.defects, catch=args.catch, false_alarms=args.false_alarms)
    default = load_model(path).default_score
    rule = f"quantile {cal.quantile}" if target is None else f"{target.target.replace('_', '-')} target"
    print(f"calibration fitted on {cal.n_images} normal image(s); default score {default}, threshold "
          f"{cal.scores[default].threshold:.6g} ({rule}); written to {path}")
    if target is not None:
        for line in target.lines()[1:]:
            print(line)
        for warning in threshold_warnings(target, cal):
            log.warning("%s", warning)
    return 0
