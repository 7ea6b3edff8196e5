"""``scgan update``: new normal images join a fitted model, and its calibration is fitted again; a new file."""
from __future__ import annotations

import argparse

HELP = "add new normal images (e.g. false alarms) to a fitted model without fitting it again; writes a new file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the model file to update (never written to)")
    p.add_argument("--output", required=True, help="the new model file (refused when it exists, unless --overwrite)")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER", help="new normal images, or folders of them")
    p.add_argument("--feedback", metavar="DIR", help="also the images marked 'false alarm' in this feedback folder "
                                                     "('scgan serve --feedback DIR')")
    p.add_argument("--holdout", type=float, default=None,
                   help="share of the new images added to the calibration's normal images instead of the model "
                        "(default 0.2)")
    p.add_argument("--normal", metavar="DIR", help="calibrate on these normal images instead of those the model "
                                                   "file keeps (needed for a file that keeps none)")
    p.add_argument("--parent", metavar="SHA256", help="refuse unless --checkpoint is this version (its sha256 or "
                                                      "its first digits)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (never the checkpoint)")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted) instead of "
                                                                  "stopping")


def run(args: argparse.Namespace) -> int:
    from scgan.training.update import HOLDOUT, update_model

    res = update_model(args.checkpoint, args.images, args.output, feedback=args.feedback, normal_dir=args.normal,
                       holdout=HOLDOUT if args.holdout is None else args.holdout, parent=args.parent,
                       overwrite=args.overwrite, skip_bad_images=args.skip_bad_images)
    into = sum(a.role == "bank" for a in res.images)
    print(f"updated {args.checkpoint} (sha256 {res.parent_sha256[:12]}) with {len(res.images)} new image(s): {into} "
          f"into the model, {len(res.images) - into} held out for the calibration; in {res.wall_s:.1f} s")
    after = f"{res.threshold_after:.6g}" if res.score == res.score_after else \
        f"{res.threshold_after:.6g} of {res.score_after} (the calibration's 'auto' choice of score changed)"
    print(f"threshold ({res.score}): {res.threshold_before:.6g} -> {after}; calibration "
          f"on {res.calibration_images[0]} -> {res.calibration_images[1]} normal images; stored feature rows "
          f"{res.bank_rows[0]} -> {res.bank_rows[1]}")
    print("image\trole\tscore before\tscore after\tcalled anomalous before -> after")
    for a in res.images:
        was, now = a.before > res.threshold_before, a.after > res.threshold_after
        called = f"{'yes' if was else 'no'} -> {'yes' if now else 'no'}"
        print(f"{a.name}\t{a.role}\t{a.before:.6g}\t{a.after:.6g}\t{called}")
    print(f"written to {res.path} (sha256 {res.sha256[:12]}); 'scgan history {res.path}' lists its versions")
    return 0
