"""``scgan export --format onnx``: the scoring graph as a self-contained ONNX file.

The graph is :class:`scgan.model.scorer.Scorer` (image batch -> scores, anomaly maps) with a dynamic batch
axis, exported with PyTorch's ``torch.export``-based ONNX exporter (``dynamo=True``, the default since
PyTorch 2.9; the TorchScript one is deprecated). The calibration, config, score names, image size and
default score travel as ONNX ``metadata_props``, so the file alone is enough for
``scgan predict --onnx``, which runs it with onnxruntime and no torch (:mod:`scgan.onnx_runtime`).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from scgan import __version__
from scgan.checkpoint import LoadedModel, load_model
from scgan.onnx_runtime import INPUT_NAME, INSTALL_HINT, OUTPUT_NAMES, OnnxScorer, metadata_props
from scgan.utils.atomic import atomic_write_bytes

__all__ = ["OnnxScorer", "export_onnx"]

# Largest |onnxruntime - torch| difference, on scores and maps, that export accepts before writing the file.
PARITY_ATOL = 1e-4


def _export_graph(scorer: torch.nn.Module, image_size: int, opset: int | None):
    """The ONNX ModelProto of ``scorer`` with a dynamic batch axis."""
    # A batch of 2, not 1: torch.export specialises a dimension of size 1 into a constant.
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                scorer, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: batch},), opset_version=opset, optimize=True, verbose=False, report=False,
            )
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({e}); {INSTALL_HINT}") from None
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _check_dynamic_batch(model) -> None:
    """Raise unless the first axis of every graph input and output is symbolic."""
    for value in [*model.graph.input, *model.graph.output]:
        dim0 = value.type.tensor_type.shape.dim[0]
        if not dim0.dim_param:
            raise RuntimeError(f"ONNX export kept a fixed batch size for {value.name!r}; expected a dynamic axis")


def _check_parity(data: bytes, scorer: torch.nn.Module, image_size: int) -> None:
    """Score a random batch with onnxruntime and torch; raise if they differ by more than PARITY_ATOL."""
    try:
        import onnxruntime as ort
    except ImportError:
        return  # onnxruntime is only needed to run the model; onnx.checker has checked the file

    x = torch.rand(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        ts, tm = scorer(x)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    os_, om = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    err = max(float(np.abs(os_ - ts.numpy()).max()), float(np.abs(om - tm.numpy()).max()))
    if not err <= PARITY_ATOL:
        raise RuntimeError(f"the exported ONNX model differs from the torch model by {err:.3g} (> {PARITY_ATOL})")


def export_onnx(checkpoint: str | Path | LoadedModel, output: str | Path, opset: int | None = None,
                check: bool = True) -> Path:
    """Export a model file or checkpoint to ONNX at ``output`` (atomically); return the path.

    Input ``image`` (B, 3, S, S) float32 in [-1, 1]; outputs ``scores`` (B, K, in the scorer's score-name order) and
    ``anomaly_map`` (B, S, S). ``check`` runs onnx.checker and compares onnxruntime with torch.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from None
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"ONNX output must be a file path (e.g. model.onnx), not a folder: {output}")
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    cfg = loaded.config
    size = cfg.model.image_size
    scorer = loaded.scorer().eval()
    model = _export_graph(scorer, size, opset)
    _check_dynamic_batch(model)
    props = metadata_props(calibration=loaded.calibration, config=cfg.identity(), image_size=size,
                           default_score=loaded.default_score, version=__version__,
                           augmentation=loaded.augmentation, train_info=loaded.meta, score_names=scorer.names)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if check:
        _check_parity(data, scorer, size)
    atomic_write_bytes(output, data)  # nothing is written unless every check passed
    return output
