"""``scgan history``: the versions a model file came from, and restoring one of them byte for byte."""
from __future__ import annotations

import argparse

HELP = "list the versions a model file came from (updates, calibrations); restore one byte for byte"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model file")
    p.add_argument("--search", action="append", default=[], metavar="DIR",
                   help="also look for earlier versions under this folder (recursively; repeatable); the model's "
                        "own folder is always searched")
    p.add_argument("--restore", metavar="SHA256", help="copy this version (its sha256, or at least its first 6 "
                                                       "digits) to --output, byte for byte")
    p.add_argument("--output", help="where --restore writes (refused when it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="let --restore replace an existing --output")


def _step_words(step: dict | None) -> str:
    if step is None:
        return "fitted"
    changed = step.get("changed") or {}
    added = step.get("added") or []
    words = [f"{step.get('action', '?')} {step.get('time', '')}"]
    if added:
        into = sum(a.get("role") == "bank" for a in added)
        words.append(f"+{len(added)} image(s) ({into} into the model)")
    if "threshold" in changed:
        a, b = changed["threshold"]
        s0, s1 = changed.get("default_score") or ("", "")
        if s0 != s1:  # the 'auto' choice of score changed with the calibration
            words.append(f"threshold {s0} {a:.6g} -> {s1} {b:.6g}")
        else:
            words.append(f"threshold {a:.6g} -> {b:.6g}")
    if "calibration_images" in changed:
        a, b = changed["calibration_images"]
        words.append(f"calibration images {a} -> {b}")
    return ", ".join(words)


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.lineage import history, restore
    from scgan.artifacts.model_file import load_model

    loaded = load_model(args.model)
    if args.restore:
        if not args.output:
            raise ValueError("--restore needs --output, the file to write the version to")
        version = restore(args.model, loaded.lineage, args.restore, args.output, args.search, args.overwrite)
        print(f"restored version {version.sha256[:12]} from {version.path} to {args.output} (sha256 checked: "
              "byte-identical)")
        return 0
    versions = history(args.model, loaded.lineage, args.search)
    print(f"{len(versions)} version(s) of {args.model}, oldest first:")
    for i, v in enumerate(versions):
        where = str(v.path) if v.path is not None else f"not on disk (was {v.name or 'unnamed'})"
        print(f"v{i}\t{v.sha256[:12]}\t{_step_words(v.step)}\t{where}")
    return 0
