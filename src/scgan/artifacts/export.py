"""``scgan export --format onnx``: the scoring graph as a self-contained ONNX file.

The graph is :class:`scgan.models.scgan.scorer.Scorer` (image batch -> scores, anomaly maps) with a dynamic batch
axis, exported with PyTorch's ``torch.export``-based ONNX exporter (``dynamo=True``, the default since
PyTorch 2.9; the TorchScript one is deprecated). The calibration, config, score names, image size and
default score travel as ONNX ``metadata_props``, so the file alone is enough for
``scgan predict --onnx``, which runs it with onnxruntime and no torch (:mod:`scgan.artifacts.onnx_file`).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from scgan import __version__
from scgan.artifacts.model_file import LoadedModel, load_model
from scgan.artifacts.onnx_file import (
    INPUT_NAME,
    INSTALL_HINT,
    OUTPUT_NAMES,
    PARITY_ATOL,
    PARITY_RTOL,
    OnnxScorer,
    metadata_props,
    parity_gap,
    parity_words,
    reference_input,
)
from scgan.data.io import InputSpec
from scgan.utils.atomic import atomic_write_bytes, same_file
from scgan.utils.limits import EXPORT_OPSET

__all__ = ["PARITY_ATOL", "PARITY_RTOL", "OnnxScorer", "export_onnx"]


def _example(spec: InputSpec, n: int = 2) -> torch.Tensor:
    """A batch the model takes: S x S, or for a model that keeps the aspect one of its working shapes (not square,
    so that neither side is specialised into the other)."""
    h, w = spec.shape(spec.size, spec.size + 3 * spec.multiple) if spec.keep_aspect else (spec.size, spec.size)
    return torch.rand(n, spec.channels, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _export_graph(scorer: torch.nn.Module, spec: InputSpec, opset: int | None):
    """The ONNX ModelProto of ``scorer`` with a dynamic batch axis (and dynamic sides where the aspect is kept)."""
    # A batch of 2, not 1: torch.export specialises a dimension of size 1 into a constant.
    example = _example(spec).zero_()
    axes = {0: torch.export.Dim("batch")}
    if spec.keep_aspect:  # sides are multiples of the backbone's stride, at least twice it (and min_side)
        m = spec.multiple
        least = spec.least_side // m
        axes.update({2: m * torch.export.Dim("height_blocks", min=least, max=4096 // m),
                     3: m * torch.export.Dim("width_blocks", min=least, max=4096 // m)})
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                scorer, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes=(axes,), opset_version=opset, optimize=True, verbose=False, report=False,
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


def _check_parity(data: bytes, scorer: torch.nn.Module, spec: InputSpec) -> None:
    """Score a random batch and the reference input with onnxruntime and torch; raise if they differ by more than the
    parity tolerance (:func:`parity_gap`; what a load checks again on the reference input)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return  # onnxruntime is only needed to run the model; onnx.checker has checked the file

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for x in (_example(spec, 3), torch.from_numpy(reference_input(spec))):
        with torch.inference_mode():
            ts, tm = scorer(x)
        os_, om = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        for what, got, want in (("scores", os_, ts.numpy()), ("anomaly map", om, tm.numpy())):
            try:
                gap = parity_gap(got, want)
            except ValueError as e:
                raise RuntimeError(f"the exported ONNX model's {what}: {e}") from None
            if gap is not None:
                raise RuntimeError(f"the exported ONNX model's {what} differ from the torch model's by "
                                   f"{parity_words(*gap[:2])}")


def _reference_scores(scorer: torch.nn.Module, spec: InputSpec) -> np.ndarray:
    """The torch model's (K,) scores of the reference input, which the file stores; refused where not finite."""
    with torch.inference_mode():
        scores, maps = scorer(torch.from_numpy(reference_input(spec)))
    if not (torch.isfinite(scores).all() and torch.isfinite(maps).all()):
        raise RuntimeError("the model scores nan or infinite values on a reference image; it cannot be exported")
    return scores[0].float().numpy()


def export_onnx(checkpoint: str | Path | LoadedModel, output: str | Path, opset: int | None = None,
                check: bool = True) -> Path:
    """Export a model file or checkpoint to ONNX at ``output`` (atomically); return the path.

    Input ``image`` (B, C, H, W) float32 in [-1, 1] (the model's input spec); outputs ``scores`` (B, K, in the
    scorer's score-name order) and ``anomaly_map`` (B, H, W). ``check`` runs onnx.checker and compares
    onnxruntime with torch.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from None
    if opset is not None:
        EXPORT_OPSET.check("opset", opset)
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"ONNX output must be a file path (e.g. model.onnx), not a folder: {output}")
    source = checkpoint.path if isinstance(checkpoint, LoadedModel) else checkpoint
    if source is not None and same_file(source, output):
        raise ValueError(f"--output {output} is the model file being exported: ONNX bytes would replace it; choose "
                         "another --output, e.g. model.onnx")
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    cfg = loaded.config
    spec = loaded.input_spec
    scorer = loaded.scorer().eval()
    model = _export_graph(scorer, spec, opset)
    _check_dynamic_batch(model)
    props = metadata_props(calibration=loaded.calibration, config=cfg.identity(), spec=spec,
                           default_score=loaded.default_score, version=__version__,
                           augmentation=loaded.augmentation, train_info=loaded.meta, score_names=scorer.names,
                           reference_scores=_reference_scores(scorer, spec))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if check:
        _check_parity(data, scorer, spec)
    atomic_write_bytes(output, data)  # nothing is written unless every check passed
    return output
