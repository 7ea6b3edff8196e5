"""The models, one folder per kind (``scgan``, ``patchcore``), and what they share: scoring, the kind registry,
config checks."""
