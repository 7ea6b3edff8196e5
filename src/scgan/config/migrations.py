"""The one place that knows how stored configs changed over time, and reads old ones.

- ``ADDED_LATER``: settings added after runs and model files had been written, with the value those were
  made with. A stored config that lacks one had that value; run keys leave it out at that value.
- ``MOVED``: settings that moved to another section; an old key is read at its new place.

Model files themselves (their format and versions) are ``scgan.artifacts.model_file``'s.
"""
from __future__ import annotations

from typing import Any

from scgan.config.schema import MIXTURE_SOURCES

ADDED_LATER: dict[tuple[str, str], Any] = {
    ("model", "output_scale"): 1.0, ("model", "head"): "none", ("model", "head_width"): 32, ("model", "head_depth"): 3,
    ("loss", "w_seg"): 1.0, ("loss", "focal_gamma"): 2.0, ("train", "steps"): 0, ("augment", "p_clean"): 0.2,
    ("augment", "sources"): dict(MIXTURE_SOURCES), ("model", "kind"): "scgan",
    ("score", "selection_strengths"): [1.0], ("train", "lr_milestones"): [], ("train", "lr_gamma"): 0.2,
}

# Runtime settings lived in "train" (and two in "data"/"score") before the runtime section existed.
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    **{("train", k): ("runtime", k) for k in ("accelerator", "devices", "strategy", "precision",
                                               "channels_last", "sync_batchnorm")},
    ("data", "num_workers"): ("runtime", "num_workers"),
    ("score", "eval_batch_size"): ("runtime", "eval_batch_size"),
}


def move_keys(d: Any) -> Any:
    """A copy of a (nested) config mapping with MOVED keys at their new place; anything else as is."""
    if not isinstance(d, dict):
        return d
    d = {k: ({**v} if isinstance(v, dict) else v) for k, v in d.items()}
    for (section, key), (new_section, new_key) in MOVED.items():
        if isinstance(d.get(section), dict) and key in d[section]:
            value = d[section].pop(key)
            d.setdefault(new_section, {})
            if isinstance(d[new_section], dict):
                d[new_section].setdefault(new_key, value)
    return d


def migrate_config(d: Any) -> Any:
    """A stored config dict (model file, checkpoint) in today's layout: moved keys at their new place, and
    settings it predates at the value it was made with. Anything that is not a dict is returned as is."""
    d = move_keys(d)
    if not isinstance(d, dict):
        return d
    for (section, key), value in ADDED_LATER.items():
        if isinstance(d.get(section), dict) and key not in d[section]:
            d[section][key] = value
    return d


def moved_key(key: str) -> str:
    """``train.precision`` -> ``runtime.precision``; any other key as given."""
    if "." in key:
        section, name = key.split(".", 1)
        if (section, name) in MOVED:
            return ".".join(MOVED[(section, name)])
    return key
