"""``scgan export``: the scoring graph as a self-contained ONNX file."""
from __future__ import annotations

import argparse

from scgan.commands.common import int_in
from scgan.utils.limits import EXPORT_OPSET

HELP = "export the scoring graph (image batch -> scores, maps)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--opset", type=int_in(EXPORT_OPSET), default=None,
                   help=f"ONNX opset, {EXPORT_OPSET.low} to {EXPORT_OPSET.high} (default: the exporter's)")


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.export import export_onnx

    path = export_onnx(args.checkpoint, args.output, opset=args.opset)
    print(f"ONNX model written to {path}")
    return 0
