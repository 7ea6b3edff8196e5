"""The validation-only criterion behind a preset change: a score's separation of faint synthetic defects.

For each run of a variant (``--runs``, model files trained with ``score.selection_strengths`` including
``--strength``) and of the baseline (``--baseline``, a ``studies/scgan_head/reselect.py`` output re-fitted with the same
strengths), it prints the validation AUROC of ``--score`` against normal validation images with confetti at
``--strength``, and the two means over the runs both have. Normal validation images and synthetic defects only:
no test image is read.

    python studies/scgan_head/validation_criterion.py --runs runs/detection_lrsteps \\
        --baseline results/table1_detection/reselect/reselect.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from scgan.artifacts.model_file import load_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="folder of <run>/train/model.pt (the variant)")
    p.add_argument("--baseline", type=Path, required=True, help="reselect.json of the baseline runs")
    p.add_argument("--score", default="seg_max")
    p.add_argument("--strength", default="0.25")
    args = p.parse_args(argv)
    base = {r["run"]: r["new"]["by_strength"].get(args.strength, {}).get(args.score)
            for r in json.loads(args.baseline.read_text())["runs"]}
    pairs = []
    for path in sorted(args.runs.glob("*/train/model.pt")):
        run = path.parent.parent.name
        cal = load_model(path).calibration
        new = (cal.selection_by_strength.get(args.strength) or {}).get(args.score) if cal else None
        if new is None or base.get(run) is None:
            print(f"{run}: no {args.score} AUROC at strength {args.strength} in both; left out", file=sys.stderr)
            continue
        pairs.append((base[run], new))
        print(f"{run}: baseline {base[run]:.3f}, variant {new:.3f}")
    if not pairs:
        print("no run has the figure in both sets", file=sys.stderr)
        return 1
    print(f"{len(pairs)} runs: mean baseline {statistics.mean(b for b, _ in pairs):.4f}, "
          f"variant {statistics.mean(v for _, v in pairs):.4f} ({args.score}, strength {args.strength}, validation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
