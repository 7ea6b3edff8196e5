"""Scoring with an exported ONNX model: onnxruntime and numpy only, never torch (``pip install 'scgan[onnx]'``).

An scgan ONNX file is self-contained: besides the scoring graph (image batch -> scores, anomaly maps)
it carries, as ONNX ``metadata_props``, everything ``scgan predict --onnx`` needs to turn scores into
decisions: the calibration fitted on normal validation images, the score names, the image size, the
default score and the config it was trained with. :mod:`scgan.artifacts.export` writes these files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scgan.calibration.stats import Calibration
from scgan.data.io import InputSpec

ONNX_FORMAT = "scgan-onnx"
# 1: square S x S RGB input (scgan.image_size). 2: any model kind; the input spec (scgan.input) says the size rule
# and channels, and height and width are dynamic axes where the aspect is kept.
ONNX_FORMAT_VERSION = 2
INPUT_NAME = "image"  # (B, C, H, W) float32 in [-1, 1]
OUTPUT_NAMES = ("scores", "anomaly_map")  # (B, K) in the file's score-name order, (B, H, W)

# metadata_props keys; values are strings (JSON where structured).
META_FORMAT = "scgan.format"
META_FORMAT_VERSION = "scgan.format_version"
META_VERSION = "scgan.version"
META_SCORE_NAMES = "scgan.score_names"
META_IMAGE_SIZE = "scgan.image_size"
META_INPUT = "scgan.input"
META_DEFAULT_SCORE = "scgan.default_score"
META_CALIBRATION = "scgan.calibration.stats"
META_CONFIG = "scgan.config"
META_AUGMENTATION = "scgan.augmentation"
META_TRAIN_INFO = "scgan.train_info"

INSTALL_HINT = "install the ONNX extra: pip install 'scgan[onnx]'"


def check_batch(shape: tuple[int, ...], spec: InputSpec) -> None:
    """ValueError unless ``shape`` is a (B, C, H, W) batch the spec's model takes."""
    ok = len(shape) == 4 and shape[1] == spec.channels
    if ok and spec.keep_aspect:
        ok = shape[2] % spec.multiple == 0 and shape[3] % spec.multiple == 0
    elif ok:
        ok = shape[2:] == (spec.size, spec.size)
    if not ok:
        want = (f"(B, {spec.channels}, H, W) with H and W multiples of {spec.multiple}" if spec.keep_aspect
                else f"(B, {spec.channels}, {spec.size}, {spec.size})")
        raise ValueError(f"expected an image batch of shape {want}, got {tuple(shape)}")


class OnnxModelError(ValueError):
    """An ONNX file that is missing, damaged, not written by 'scgan export', or from a newer scgan."""


def metadata_props(*, calibration: Calibration | None, config: dict[str, Any], spec: InputSpec, default_score: str,
                   version: str, augmentation: str, train_info: dict[str, Any],
                   score_names: tuple[str, ...]) -> dict[str, str]:
    """The string key/value pairs an scgan ONNX file carries (what :class:`OnnxScorer` reads back)."""
    return {
        META_FORMAT: ONNX_FORMAT,
        META_FORMAT_VERSION: str(ONNX_FORMAT_VERSION),
        META_VERSION: version,
        META_SCORE_NAMES: json.dumps(list(score_names)),
        META_IMAGE_SIZE: str(int(spec.size)),
        META_INPUT: json.dumps(spec.to_dict()),
        META_DEFAULT_SCORE: default_score,
        META_CALIBRATION: json.dumps(calibration.to_dict() if calibration else None),
        META_CONFIG: json.dumps(config),
        META_AUGMENTATION: augmentation,
        META_TRAIN_INFO: json.dumps(train_info, default=str),
    }


class OnnxScorer:
    """Runs an scgan ONNX file: float32 (B, C, H, W) in [-1, 1] -> (scores (B, K), anomaly maps (B, H, W)).

    ``providers`` are onnxruntime execution providers (default: CPU only, for identical results anywhere).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"scoring with an ONNX model needs onnxruntime; {INSTALL_HINT}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are about its own optimisations
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 — onnxruntime raises its own pybind exception types
            raise OnnxModelError(
                f"{self.path} is not an ONNX model onnxruntime can load ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else 'no details'})"
            ) from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        if meta.get(META_FORMAT) != ONNX_FORMAT:
            raise OnnxModelError(
                f"{self.path} is an ONNX model but not one written by 'scgan export' (no scgan metadata)"
            )
        version = meta.get(META_FORMAT_VERSION, "")
        if not version.isdigit() or int(version) > ONNX_FORMAT_VERSION:
            raise OnnxModelError(
                f"{self.path} has scgan ONNX format version {version!r}, newer than this scgan reads "
                f"({ONNX_FORMAT_VERSION}); upgrade scgan"
            )
        try:
            names = tuple(json.loads(meta[META_SCORE_NAMES]))
            spec = json.loads(meta[META_INPUT]) if META_INPUT in meta else {"size": int(meta[META_IMAGE_SIZE])}
            self.spec = InputSpec.from_dict(spec)
            self.default_score = meta[META_DEFAULT_SCORE]
            cal = json.loads(meta[META_CALIBRATION])
            self.calibration: Calibration | None = Calibration.from_dict(cal) if cal else None
            self.config: dict[str, Any] = json.loads(meta[META_CONFIG])
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise OnnxModelError(f"{self.path} has damaged scgan metadata ({type(e).__name__}: {e})") from None
        if not names or not all(isinstance(n, str) for n in names):
            raise OnnxModelError(f"{self.path} has damaged scgan metadata (score names {names!r})")
        self.score_names: tuple[str, ...] = names
        if self.default_score not in names:
            raise OnnxModelError(f"{self.path} names an unknown default score {self.default_score!r}")
        bad = self.calibration.nonfinite() if self.calibration is not None else None
        if bad is not None:  # every score compared with a nan threshold would pass as normal
            raise OnnxModelError(f"{self.path} holds a calibration with values that are not numbers ({bad}), so it "
                                 "cannot decide; export the model again from its model file")
        self.version = meta.get(META_VERSION, "")

    @property
    def image_size(self) -> int:
        return self.spec.size

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, K) in ``score_names`` order and anomaly maps (B, H, W) of a float32 (B, C, H, W) batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_batch(x.shape, self.spec)
        scores, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return scores, maps

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(x)
