"""``scgan config``: print the resolved config as YAML, every setting commented."""
from __future__ import annotations

import argparse

from scgan.commands.common import add_run_options, build_config

HELP = "print the resolved config as YAML, every setting commented"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from scgan.config import commented_yaml

    print(commented_yaml(build_config(args)), end="")
    return 0
