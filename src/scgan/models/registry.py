"""The registry of model kinds: a config's ``kind`` names one of these."""
from __future__ import annotations

from scgan.config import register_kind_sections
from scgan.models.fusion.kind import FUSION
from scgan.models.kind import ModelKind
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.scgan.kind import SCGAN

KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry, and its sections to the config schema; return it. Registering a kind of a
    name already taken replaces it (a test's stand-in, a reloaded module)."""
    register_kind_sections(kind.name, dict(kind.sections))
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ModelKind:
    """The kind called ``name``; ValueError naming the valid ones."""
    if name not in KINDS:
        raise ValueError(f"unknown model kind {name!r}; valid kinds: {', '.join(KINDS)}")
    return KINDS[name]


def score_description(name: str) -> str:
    """What the score called ``name`` is, whichever kind defines it ("" for an unknown name)."""
    return next((k.scores[name] for k in KINDS.values() if name in k.scores), "")


for _kind in (PATCHCORE, SCGAN, FUSION):
    register_kind(_kind)
