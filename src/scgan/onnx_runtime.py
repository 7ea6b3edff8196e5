"""Scoring with an exported ONNX model: onnxruntime and numpy only, never torch (``pip install 'scgan[onnx]'``).

An scgan ONNX file is self-contained: besides the scoring graph (image batch -> scores, anomaly maps)
it carries, as ONNX ``metadata_props``, everything ``scgan predict --onnx`` needs to turn scores into
decisions: the calibration fitted on normal validation images, the score names, the image size, the
default score and the config it was trained with. :mod:`scgan.export` writes these files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scgan.calibration.stats import Calibration

ONNX_FORMAT = "scgan-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "image"  # (B, 3, S, S) float32 in [-1, 1]
OUTPUT_NAMES = ("scores", "anomaly_map")  # (B, K) in the file's score-name order, (B, S, S)

# metadata_props keys; values are strings (JSON where structured).
META_FORMAT = "scgan.format"
META_FORMAT_VERSION = "scgan.format_version"
META_VERSION = "scgan.version"
META_SCORE_NAMES = "scgan.score_names"
META_IMAGE_SIZE = "scgan.image_size"
META_DEFAULT_SCORE = "scgan.default_score"
META_CALIBRATION = "scgan.calibration.stats"
META_CONFIG = "scgan.config"
META_AUGMENTATION = "scgan.augmentation"
META_TRAIN_INFO = "scgan.train_info"

INSTALL_HINT = "install the ONNX extra: pip install 'scgan[onnx]'"


class OnnxModelError(ValueError):
    """An ONNX file that is missing, damaged, not written by 'scgan export', or from a newer scgan."""


def metadata_props(*, calibration: Calibration | None, config: dict[str, Any], image_size: int, default_score: str,
                   version: str, augmentation: str, train_info: dict[str, Any],
                   score_names: tuple[str, ...]) -> dict[str, str]:
    """The string key/value pairs an scgan ONNX file carries (what :class:`OnnxScorer` reads back)."""
    return {
        META_FORMAT: ONNX_FORMAT,
        META_FORMAT_VERSION: str(ONNX_FORMAT_VERSION),
        META_VERSION: version,
        META_SCORE_NAMES: json.dumps(list(score_names)),
        META_IMAGE_SIZE: str(int(image_size)),
        META_DEFAULT_SCORE: default_score,
        META_CALIBRATION: json.dumps(calibration.to_dict() if calibration else None),
        META_CONFIG: json.dumps(config),
        META_AUGMENTATION: augmentation,
        META_TRAIN_INFO: json.dumps(train_info, default=str),
    }


class OnnxScorer:
    """Runs an scgan ONNX file: float32 (B, 3, S, S) in [-1, 1] -> (scores (B, K), anomaly maps (B, S, S)).

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
            self.image_size = int(meta[META_IMAGE_SIZE])
            self.default_score = meta[META_DEFAULT_SCORE]
            cal = json.loads(meta[META_CALIBRATION])
            self.calibration: Calibration | None = Calibration.from_dict(cal) if cal else None
            self.config: dict[str, Any] = json.loads(meta[META_CONFIG])
        except (KeyError, ValueError, TypeError) as e:
            raise OnnxModelError(f"{self.path} has damaged scgan metadata ({type(e).__name__}: {e})") from None
        if not names or not all(isinstance(n, str) for n in names):
            raise OnnxModelError(f"{self.path} has damaged scgan metadata (score names {names!r})")
        self.score_names: tuple[str, ...] = names
        if self.default_score not in names:
            raise OnnxModelError(f"{self.path} names an unknown default score {self.default_score!r}")
        self.version = meta.get(META_VERSION, "")

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, K) in ``score_names`` order and anomaly maps (B, S, S) of a float32 (B, 3, S, S) batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        s = self.image_size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"expected an image batch of shape (B, 3, {s}, {s}), got {x.shape}")
        scores, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return scores, maps

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(x)
