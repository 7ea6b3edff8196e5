"""The one place that knows how stored configs changed over time, and reads old ones.

- ``ADDED_LATER``: settings added after runs and model files had been written, with the value those were
  made with. A stored config that lacks one had that value; run keys leave it out at that value.
- ``MOVED``: settings that moved to another section (or out of every section: ``model.kind`` is ``kind``,
  ``train.seed`` is ``seed``); an old key is read at its new place.
- Configs written before a config held only its own kind's sections carry every kind's: :func:`migrate_config`
  drops the others (they never changed the model).
- :func:`legacy_layout`: a config in the layout run keys were first hashed in, so that an unchanged setting
  keeps its run key.

Model files themselves (their format and versions) are ``scgan.artifacts.model_file``'s.
"""
from __future__ import annotations

import copy
from typing import Any

from scgan.config.schema import KIND_SECTIONS, MIXTURE_SOURCES, TOP_KEYS

ADDED_LATER: dict[tuple[str, str], Any] = {
    ("model", "output_scale"): 1.0, ("model", "head"): "none", ("model", "head_width"): 32, ("model", "head_depth"): 3,
    ("loss", "w_seg"): 1.0, ("loss", "focal_gamma"): 2.0, ("train", "steps"): 0, ("augment", "p_clean"): 0.2,
    ("augment", "sources"): dict(MIXTURE_SOURCES),
    ("score", "selection_strengths"): [1.0], ("train", "lr_milestones"): [], ("train", "lr_gamma"): 0.2,
    ("patchcore", "metric"): "euclidean", ("patchcore", "shrinkage"): 0.1, ("patchcore", "pad"): 0,
    ("score", "threshold_source"): "validation", ("score", "crossfit_folds"): 5, ("score", "tail"): "none",
    ("patchcore", "top_share"): 0.0, ("patchcore", "position_grid"): 0,
    ("patchcore", "position_map"): False, ("patchcore", "flips"): "none", ("patchcore", "self_map"): "none",
}
# Settings whose default changed, with the defaults they had before: a YAML file copied from an earlier preset file
# holds those in the sections of another kind, and they are as much "left at the default" as today's.
FORMER_DEFAULTS: dict[tuple[str, str], tuple[Any, ...]] = {("patchcore", "neighbourhood"): (1,),
                                                          ("patchcore", "metric"): ("euclidean",),
                                                          ("patchcore", "pad"): (0,)}
# What a stored config without a kind is, and the synthetic defects' size calibration used before the score
# section had its own (the SCGAN's augment.patch_area, whose default is this).
_OLD_KIND = "scgan"
_OLD_SELECTION_PATCH_AREA = 0.01
_OLD_BETA = 0.8  # every config's score section held the SCGAN's beta, at this default where no SCGAN used it

# Runtime settings lived in "train" (and two in "data"/"score") before the runtime section existed; the kind, the
# seed, the SCGAN's beta and its DDP sync_batchnorm lived in shared places before a config held only its kind's.
# "" is the top level.
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    **{("train", k): ("runtime", k) for k in ("accelerator", "devices", "strategy", "precision",
                                               "channels_last")},
    ("runtime", "sync_batchnorm"): ("train", "sync_batchnorm"),
    ("data", "num_workers"): ("runtime", "num_workers"),
    ("score", "eval_batch_size"): ("runtime", "eval_batch_size"),
    ("score", "beta"): ("model", "beta"),
    ("model", "kind"): ("", "kind"),
    ("train", "seed"): ("", "seed"),
}


def move_keys(d: Any) -> Any:
    """A copy of a (nested) config mapping with MOVED keys at their new place; anything else as is."""
    if not isinstance(d, dict):
        return d
    d = {k: ({**v} if isinstance(v, dict) else v) for k, v in d.items()}
    for (section, key), (new_section, new_key) in MOVED.items():
        if isinstance(d.get(section), dict) and key in d[section]:
            value = d[section].pop(key)
            if not new_section:
                d.setdefault(new_key, value)
                continue
            d.setdefault(new_section, {})
            if isinstance(d[new_section], dict):
                d[new_section].setdefault(new_key, value)
    return d


def migrate_config(d: Any) -> Any:
    """A stored config dict (model file, checkpoint) in today's layout: moved keys at their new place, another
    kind's sections dropped, and settings it predates at the value it was made with. Anything that is not a dict
    is returned as is."""
    d = move_keys(old_layout_defects(d, stored=True))
    if not isinstance(d, dict):
        return d
    d.setdefault("kind", _OLD_KIND)
    own = KIND_SECTIONS.get(d["kind"])
    if own is not None:
        for other in {s for sections in KIND_SECTIONS.values() for s in sections} - set(own):
            d.pop(other, None)
    for (section, key), value in ADDED_LATER.items():
        if isinstance(d.get(section), dict) and key not in d[section]:
            d[section][key] = value
    return d


def old_layout_defects(d: Any, stored: bool = False) -> Any:
    """A copy of a (nested) config mapping in which ``score.selection_patch_area`` is what calibration used before
    it had its own setting, ``augment.patch_area``, where the mapping is of that time: a stored config without the
    setting (``stored``), or a YAML file that keeps the kind, the seed or beta at their old places. Else as given."""
    if not isinstance(d, dict):
        return d
    score, augment, model, train = (d.get(k) for k in ("score", "augment", "model", "train"))
    old = stored or any(isinstance(sec, dict) and key in sec for sec, key in
                        ((model, "kind"), (train, "seed"), (score, "beta")))
    if not old or (isinstance(score, dict) and "selection_patch_area" in score):
        return d
    area = augment.get("patch_area", _OLD_SELECTION_PATCH_AREA) if isinstance(augment, dict) \
        else _OLD_SELECTION_PATCH_AREA
    if not stored and area == _OLD_SELECTION_PATCH_AREA:
        return d  # nothing to carry over
    score = {**score} if isinstance(score, dict) else {}
    d = {**d, "score": {**score, "selection_patch_area": area}}
    kind = model.get("kind", _OLD_KIND) if isinstance(model, dict) else d.get("kind", _OLD_KIND)
    if not stored and kind != _OLD_KIND and isinstance(augment, dict):  # it was only the calibration's defect size
        d["augment"] = {k: v for k, v in augment.items() if k != "patch_area"}
    return d


def moved_key(key: str) -> str:
    """``train.precision`` -> ``runtime.precision``, ``model.kind`` -> ``kind``; any other key as given."""
    if "." in key:
        section, name = key.split(".", 1)
        if (section, name) in MOVED:
            new_section, new_key = MOVED[(section, name)]
            return f"{new_section}.{new_key}" if new_section else new_key
    return key


def legacy_layout(identity: dict[str, Any]) -> dict[str, Any]:
    """A config's identity (``Config.identity()``) as run keys first hashed it: the kind in ``model``, the seed in
    ``train``, ``beta`` in ``score``, no ``selection_patch_area`` where it is the size calibration took from
    ``augment`` then, and no setting of ``ADDED_LATER`` at its old value. Only for hashing: an unchanged setting
    keeps its run key."""
    d = copy.deepcopy(identity)
    d.get("train", {}).pop("sync_batchnorm", None)  # a runtime setting then
    top = {k: d.pop(k) for k in TOP_KEYS if k in d}
    d["model"] = {"kind": top.get("kind", _OLD_KIND), **d.get("model", {})}
    d["train"] = {**d.get("train", {}), "seed": top.get("seed", 0)}
    score = d.get("score", {})
    score["beta"] = d["model"].pop("beta", _OLD_BETA)
    if score.get("selection_patch_area") == d.get("augment", {}).get("patch_area", _OLD_SELECTION_PATCH_AREA):
        score.pop("selection_patch_area")
    if d["model"]["kind"] == _OLD_KIND:
        del d["model"]["kind"]  # added later, at "scgan"
    for (section, key), value in ADDED_LATER.items():
        if d.get(section, {}).get(key, object()) == value:
            del d[section][key]
    return d
