"""What several commands share: their common options, building the config, and what they print."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from scgan.calibration.stats import normal_images
from scgan.utils.limits import WORKERS, Range


class LazyChoices:
    """argparse ``choices`` read from a registry only when first needed (``scgan --version`` imports no torch)."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names

    def __contains__(self, item: object) -> bool:
        return item in tuple(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._names()))


def _dataset_names() -> tuple[str, ...]:
    from scgan.data.datasets import DATASETS

    return tuple(DATASETS)


def _preset_names() -> tuple[str, ...]:
    from scgan.config import PRESETS

    return tuple(PRESETS)


DATASET_CHOICES = LazyChoices(_dataset_names)
DEFAULT_PRESET = "default"


def _parse_number(text: str, convert: Callable[[str], int | float], expected: str,
                  valid: Callable[[int | float], bool]) -> int | float:
    """``text`` converted by ``convert`` and accepted by ``valid``, else an argument error saying what was expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count, a batch size): anything else is an argument error."""
    return _parse_number(text, int, "a positive integer", lambda v: v >= 1)


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, say): 0, negatives, nan and inf are argument errors."""
    return _parse_number(text, float, "a positive finite number", lambda v: math.isfinite(v) and v > 0)


def int_in(allowed: Range) -> Callable[[str], int]:
    """An argparse type: a whole number in ``allowed`` (a :class:`scgan.utils.limits.Range`), else an argument error
    stating the range and why it is bounded."""
    why = f" ({allowed.why})" if allowed.why else ""

    def parse(text: str) -> int:
        return _parse_number(text, int, allowed.words() + why, lambda v: v in allowed)

    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    return _parse_number(text, int, "a port from 0 to 65535 (0: any free one)", lambda v: 0 <= v <= 65535)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=LazyChoices(_preset_names), metavar="PRESET",
                   help=f"named preset: {', '.join(_preset_names())} (default {DEFAULT_PRESET}; "
                        "'scgan config --preset P' prints one)")
    p.add_argument("--config", dest="config_file", help="YAML file of config overrides (nested by section or flat)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. seed=1 patchcore.resolution=320 (see 'scgan config')")


def add_backend_option(p: argparse.ArgumentParser) -> None:
    """``--backend auto|torch|onnx``: the runtime a model file is scored on (``scgan.inference.backend``)."""
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="the runtime of a model file: auto (default: ONNX Runtime on the model's graph, exported once "
                        "and cached beside the model file, where that is faster for the model's kind; else torch), "
                        "torch, or onnx")


def add_data_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default=None, metavar="DATASET",
                   help="dataset layout: mvtec, btad or folder (default: mvtec)" if required
                   else "dataset layout (default: the model's)")
    p.add_argument("--root", required=required, help="dataset root folder")
    p.add_argument("--category", default=None, help="MVTec category or BTAD product (01, 02, 03)")


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", help="Lightning accelerator: cpu (default), gpu, auto")
    p.add_argument("--devices", help="number of devices (or 'auto')")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--precision", help="32-true (default), bf16-mixed, 16-mixed (GPU)")


def add_cluster_options(p: argparse.ArgumentParser, actors: str) -> None:
    """--address and --workers of a command's --engine ray (``actors``: what its actors do, e.g. "scoring")."""
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="with --engine ray: the cluster to join (auto: the one this machine is part of); without it "
                        "a local Ray of --workers processes")
    p.add_argument("--workers", type=int_in(WORKERS), default=2, help=f"with --engine ray: {actors} actors at most")


def build_config(args: argparse.Namespace, extra: dict | None = None, base: dict | None = None):
    """Preset, YAML, then ``base`` defaults, the user's key=value overrides, then ``extra`` (from flags); checked."""
    from scgan.config import load_config, parse_overrides
    from scgan.models.checks import check_config

    overrides = dict(base or {})
    overrides.update(parse_overrides(args.overrides))
    overrides.update(extra or {})
    return check_config(load_config(args.preset, args.config_file, overrides))


def print_calibration(model_path: Path, warn: bool = True) -> None:
    """How the trained model decides: its score (and why), threshold, and the validation images behind them.
    ``warn=False``: the training already warned that the calibration rests on few images."""
    from scgan.artifacts.model_file import load_model
    from scgan.data.datasets import calibration_warning

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
    normal = normal_images(cal.n_images, cal.n_crossfit)
    tail = f"; {cal.tails[name]['note']}" if name in cal.tails else ""
    print(f"threshold {cal.scores[name].threshold:.4g}: the {cal.quantile:g} quantile of {name} on {normal}{tail}; "
          f"{cal.false_alarms(name).sentence()}")
    small = calibration_warning(cal.n_images)  # the one rule, shared with training and test
    if small and warn:
        print(f"warning: {small}", file=sys.stderr)


def decision_lines(m: dict) -> list[str]:
    """What the model's own threshold does on the test set: catch and false-alarm rates, per defect type."""
    from scgan.utils.tables import pct

    d = m.get("at_threshold")
    if not d:
        return [f"no decisions: the model has no calibration (score {m['default_score']})"]
    norm = "" if d.get("threshold_normalized") is None else f", normalised {d['threshold_normalized']:.3g}"
    lines = [f"at the model's threshold ({m['default_score']} > {d['threshold']:.4g}{norm}): "
             f"catches {d['caught']} of {d['defective']} defective images ({pct(d['catch_rate'], unit='%')}), "
             f"false alarms on {d['false_alarms']} of {d['normal']} normal images "
             f"({pct(d['false_alarm_rate'], unit='%')}"
             + ("" if d.get("expected_false_alarm_rate") is None else
                f"; expected from {normal_images(d['calibration_images'], d.get('crossfit_images', 0))}: "
                f"{pct(d['expected_false_alarm_rate'], unit='%')}, 95% interval "
                f"{pct(d['expected_false_alarm_interval'][0], unit='%')}-"
                f"{pct(d['expected_false_alarm_interval'][1], unit='%')}") + ")"]
    if d["by_defect"]:
        lines.append("  caught per defect type: " + ", ".join(
            f"{name} {v['caught']}/{v['images']} ({pct(v['catch_rate'], unit='%')})"
            for name, v in d["by_defect"].items()))
    return lines


def print_metrics(m: dict, out: Path) -> None:
    """The test's decisions at the threshold first, then the headline metrics, every score's image AUROC, and where
    the files are."""
    from scgan.utils.tables import pct

    for line in decision_lines(m):
        print(line)
    shown = {k: pct(m[k], unit="%") for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    print(f"image AUROC {shown['image_auroc']} | pixel AUROC {shown['pixel_auroc']} | "
          f"AUPRO {shown['aupro']} | F1-max {shown['f1_max']}  (score: {m['default_score']}; these need no threshold)")
    by_defect = m.get("pixel_auroc_by_defect") or {}
    if len(by_defect) > 1:
        print("pixel AUROC per defect type (with the normal images; share of the defect pixels): " + ", ".join(
            f"{name} {pct(v['pixel_auroc'], unit='%')} ({pct(v['pixel_share'], unit='%')})"
            for name, v in by_defect.items()))
    others = ", ".join(f"{k} {pct(v['image_auroc'], unit='%')}" for k, v in m["scores"].items())
    print(f"image AUROC per score: {others}")
    print(f"results: {out / 'metrics.json'}" + (f", report: {out / 'report.html'}" if (out / "report.html").exists()
                                                 else ""))


def test_and_print(checkpoint, output, progress: bool = True, **kw) -> int:
    """Run the test and print its metrics (``scgan test``, and ``scgan train --test``); ``kw`` go to run_test."""
    from scgan.inference.evaluate import run_test

    res = run_test(checkpoint, output, progress=progress, **kw)
    print_metrics(res.metrics, res.output_dir)
    return 0
