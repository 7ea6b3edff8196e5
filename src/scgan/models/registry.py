"""The registry of model kinds: ``model.kind`` names one of these."""
from __future__ import annotations

from scgan.models.kind import ModelKind
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.scgan.kind import SCGAN

KINDS: dict[str, ModelKind] = {k.name: k for k in (PATCHCORE, SCGAN)}


def get_kind(name: str) -> ModelKind:
    """The kind called ``name``; ValueError naming the valid ones."""
    if name not in KINDS:
        raise ValueError(f"unknown model kind {name!r}; valid kinds: {', '.join(KINDS)}")
    return KINDS[name]


def score_description(name: str) -> str:
    """What the score called ``name`` is, whichever kind defines it ("" for an unknown name)."""
    return next((k.scores[name] for k in KINDS.values() if name in k.scores), "")
