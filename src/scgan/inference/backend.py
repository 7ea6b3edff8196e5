"""Which runtime scores a model file: torch, or ONNX Runtime on the model's exported graph, cached beside it.

``auto`` (the default of ``scgan predict``, ``scgan serve`` and ``Detector.load``) runs a model on ONNX Runtime
where its kind says that is faster (``ModelKind.scoring_backend``; the PatchCore detector: about 3x torch on 2 CPU
cores, docs/performance.md) and onnxruntime is installed, else on torch. The graph is exported once per model file
and kept as a hidden file beside it (``.model.pt.<key>.onnx``), or, where that folder cannot be written, in the
user's cache folder; the key is the model file's sha256 with the versions of scgan and of the exporter, so a
changed model or a new exporter makes a new graph, and no start exports again what an earlier one did. Where
neither folder can be written, or the export fails, ``auto`` says so in one line and scores on torch. Every load of
a cached graph recomputes the scores the export stored (``scgan.artifacts.onnx_file``), so a damaged cache file is
refused and exported again, never used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from scgan import __version__

log = logging.getLogger("scgan")

BACKENDS = ("auto", "torch", "onnx")
CACHE_ENV = "SCGAN_CACHE_DIR"  # where graphs go when the model's folder cannot be written (default: the user cache)
_EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


@dataclass(frozen=True)
class BackendChoice:
    """The runtime chosen for a model file and the file it loads (the model file, or its cached ONNX graph)."""

    backend: str  # "torch" or "onnx"
    path: Path  # what to load
    model_path: Path  # what the user named
    note: str | None = None  # why ``auto`` chose torch where it would have chosen ONNX (one line), else None
    loaded: object | None = None  # the model file already read (a LoadedModel), where choosing read it


def onnx_available() -> bool:
    """Whether ONNX Runtime and the exporter's packages are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in _EXPORT_PACKAGES)


def cache_key(model_path: Path) -> str:
    """16 hex digits naming a model file's exported graph: its sha256, and the versions that shape the export
    (scgan, torch, onnx, onnxscript). The graph's height and width are dynamic axes, so no input shape enters."""
    from importlib.metadata import version

    from scgan.artifacts.lineage import file_sha256

    parts = {"model": file_sha256(model_path), "scgan": __version__,
             **{name: version(name) for name in ("torch", "onnx", "onnxscript")}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def user_cache_dir() -> Path:
    """``$SCGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/scgan/onnx``, else ``~/.cache/scgan/onnx``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scgan" / "onnx"


def cache_candidates(model_path: Path, key: str) -> list[Path]:
    """Where a model's graph is looked for and written, in order: beside the model, then the user cache."""
    return [model_path.parent / f".{model_path.name}.{key}.onnx",
            user_cache_dir() / f"{model_path.stem}-{key}.onnx"]


def _remove_stale(model_path: Path, keep: Path) -> None:
    """Delete graphs of earlier versions of this model file left beside it (another key)."""
    for old in model_path.parent.glob(f".{model_path.name}.*.onnx"):
        if old != keep:
            try:
                old.unlink()
            except OSError:
                pass


def cached_graph(model_path: Path, loaded=None, key: str | None = None) -> Path:
    """The model file's exported graph: found in the cache, else exported there (see the module's docstring).

    ``loaded`` is the model already read (a :class:`scgan.artifacts.model_file.LoadedModel`), else it is read on a
    cache miss; ``key`` its :func:`cache_key`, taken before it was read. A graph is cached only when the file still
    has that key after the read: one replaced meanwhile would leave the old model's graph under the new file's key.
    Raises OSError where no cache folder can be written, RuntimeError for a file replaced while it was read, and
    what the export raises where it fails.
    """
    from scgan.artifacts.onnx_file import OnnxModelError, OnnxScorer

    key = key or cache_key(model_path)
    candidates = cache_candidates(model_path, key)
    for path in candidates:
        if path.is_file():
            try:
                OnnxScorer(path)  # the stored reference scores recomputed: a damaged file is exported again
                return path
            except OnnxModelError as e:
                log.warning("the cached ONNX graph %s is damaged (%s); exporting it again", path, e)
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.model_file import load_model

    loaded = loaded if loaded is not None else load_model(model_path)
    if cache_key(model_path) != key:
        raise RuntimeError(f"{model_path} was replaced while it was read; its graph is not cached")
    errors = []
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(loaded, path)
        except OSError as e:  # a read-only folder or disk: the next place
            errors.append(f"{path.parent}: {e.strerror or e}")
            continue
        if path.parent == model_path.parent:
            _remove_stale(model_path, path)
        return path
    raise OSError(f"no folder to cache the ONNX graph in ({'; '.join(errors)})")


def choose_backend(path: str | os.PathLike, backend: str = "auto") -> BackendChoice:
    """The runtime for the model at ``path``: "torch", "onnx" (a ``.onnx`` file, or a model file's cached graph),
    or "auto" (ONNX where the model's kind scores faster there and onnxruntime is installed, else torch)."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file: it runs on onnxruntime, not torch (give the model.pt)")
        return BackendChoice("onnx", path, path)
    if backend == "torch":
        return BackendChoice("torch", path, path)
    if not onnx_available():
        if backend == "onnx":
            from scgan.artifacts.onnx_file import INSTALL_HINT

            raise ImportError(f"--backend onnx needs onnxruntime, onnx and onnxscript; {INSTALL_HINT}")
        return BackendChoice("torch", path, path)
    from scgan.artifacts.model_file import load_model

    # Before the read: the graph cached is the one of the bytes read (cached_graph); load_model names a missing file.
    key = cache_key(path) if path.is_file() else None
    loaded = load_model(path)  # the model file's own checks, and its kind
    if backend == "auto" and loaded.kind.scoring_backend != "onnx":
        return BackendChoice("torch", path, path, loaded=loaded)
    try:
        return BackendChoice("onnx", cached_graph(path, loaded, key), path)
    except (OSError, RuntimeError, ImportError, ValueError) as e:
        if backend == "onnx":
            raise
        note = f"scoring on torch: no ONNX graph for {path.name} ({str(e).splitlines()[0] if str(e) else e!r})"
        log.warning("%s", note)
        return BackendChoice("torch", path, path, note, loaded)
