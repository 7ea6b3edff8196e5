"""One module per ``scgan`` command: each adds its options to a parser (``add_arguments``) and runs (``run``).

``scgan.cli`` only builds the parser from :data:`COMMANDS` and dispatches; each command imports what it needs
when it runs, so that ``scgan --help`` stays quick.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from scgan.commands import (
    calibrate,
    config,
    demo,
    export,
    history,
    predict,
    results,
    serve,
    study,
    test,
    train,
    update,
    watch,
)


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, how it adds its options, how it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    takes_settings: bool = True  # key=value settings (those that do not use the model's config)


COMMANDS: dict[str, Command] = {
    "train": Command(train.HELP, train.add_arguments, train.run),
    "test": Command(test.HELP, test.add_arguments, test.run, takes_settings=False),
    "predict": Command(predict.HELP, predict.add_arguments, predict.run, takes_settings=False),
    "serve": Command(serve.HELP, serve.add_arguments, serve.run, takes_settings=False),
    "demo": Command(demo.HELP, demo.add_arguments, demo.run),
    "config": Command(config.HELP, config.add_arguments, config.run),
    "benchmark": Command(study.BENCHMARK_HELP, partial(study.add_arguments, ablate=False), study.run),
    "ablate": Command(study.ABLATE_HELP, partial(study.add_arguments, ablate=True), study.run),
    "calibrate": Command(calibrate.HELP, calibrate.add_arguments, calibrate.run),
    "export": Command(export.HELP, export.add_arguments, export.run, takes_settings=False),
    "update": Command(update.HELP, update.add_arguments, update.run, takes_settings=False),
    "history": Command(history.HELP, history.add_arguments, history.run, takes_settings=False),
    "watch": Command(watch.HELP, watch.add_arguments, watch.run, takes_settings=False),
    "results": Command(results.HELP, results.add_arguments, results.run, takes_settings=False),
}
