"""``scgan test``: score a model's test split; metrics.json, scores.csv and a report."""
from __future__ import annotations

import argparse

from scgan.commands.common import add_data_options, test_and_print

HELP = "score the test split; write metrics.json, scores.csv and a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--output", required=True, help="output folder")
    add_data_options(p, required=False)
    p.add_argument("--image-level-only", action="store_true", help="allow anomalous images without masks")
    p.add_argument("--no-report", action="store_true", help="skip report.md / report.html")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    return test_and_print(args.checkpoint, args.output, progress=not args.no_progress, root=args.root,
                          category=args.category, dataset=args.dataset, report=not args.no_report,
                          require_masks=False if args.image_level_only else None)
