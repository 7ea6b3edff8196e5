"""Scoring with an exported ONNX model: onnxruntime and numpy only, never torch (``pip install 'scgan[onnx]'``).

An scgan ONNX file is self-contained: besides the scoring graph (image batch -> scores, anomaly maps)
it carries, as ONNX ``metadata_props``, everything ``scgan predict --onnx`` needs to turn scores into
decisions: the calibration fitted on normal validation images, the score names, the image size, the
default score and the config it was trained with. :mod:`scgan.artifacts.export` writes these files.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from scgan.calibration.stats import Calibration
from scgan.config import migrate_config
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
# JSON {"input": REFERENCE_INPUT, "shape": [1, C, H, W], "scores": [K floats]}: the torch model's scores of
# reference_input(spec) and its shape, stored at export; every load makes that input again from the metadata's input
# spec (refusing a file whose spec makes another shape) and refuses a file whose graph no longer gives those scores.
META_REFERENCE = "scgan.reference_scores"
REFERENCE_INPUT = "sin-1"  # names the formula of reference_input

# Largest |onnxruntime - torch| difference, on scores and maps, that export accepts before writing the file, and that
# a load accepts between the stored reference scores and the graph's: PARITY_ATOL + PARITY_RTOL x |torch's value|. The
# relative part is float32's precision, some units in the last place (16 at 400): a score in the hundreds (map_z on the
# random and reference images the checks use reads up to about 400, where float32 values lie 3e-5 apart, so 1e-4
# alone is 3 units) would otherwise fail on rounding alone; below 10 it adds at most a tenth.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-6


def parity_gap(got: np.ndarray, want: np.ndarray) -> tuple[float, float, int] | None:
    """None where ``got`` lies within the parity tolerance of ``want`` everywhere; else, at the element furthest
    beyond it (flat index), the difference and the tolerance there. Outputs of another shape than ``want``'s, or
    empty, are never within it (ValueError); nor is a value that is not finite on either side."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or got.size == 0:
        raise ValueError(f"outputs of shape {got.shape} cannot be compared with the torch model's {want.shape}")
    with np.errstate(invalid="ignore"):  # inf - inf: nan, judged below as not finite
        diff = np.abs(got - want).ravel()
    allowed = (PARITY_ATOL + PARITY_RTOL * np.abs(np.where(np.isfinite(want), want, 0.0))).ravel()
    excess = np.where(np.isfinite(got).ravel() & np.isfinite(want).ravel(), diff / allowed, np.inf)
    worst = int(excess.argmax())
    return None if excess[worst] <= 1 else (float(diff[worst]), float(allowed[worst]), worst)


def parity_words(diff: float, allowed: float) -> str:
    """The difference and the tolerance, in the words both checks use."""
    return (f"{diff:.3g} (at most {allowed:.3g} there: {PARITY_ATOL:g} + {PARITY_RTOL:g} x the value)")

INSTALL_HINT = "install the ONNX extra: pip install 'scgan[onnx]'"
# Inputs of at least this many pixels are run one image at a time (see OnnxScorer.run); smaller ones (the SCGAN's
# 64-256 px squares, not measured one at a time) keep their batch.
ONE_AT_A_TIME_PIXELS = 288 * 288

log = logging.getLogger("scgan")


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


def reference_input(spec: InputSpec) -> np.ndarray:
    """The fixed input whose scores an export stores and every load recomputes: float32 (1, C, H, W) in [-1, 1] at
    the working shape of a square image, made by a formula (no random generator: the same on every machine and
    numpy version)."""
    h, w = spec.shape(spec.size, spec.size)
    n = spec.channels * h * w
    return np.sin(np.arange(n, dtype=np.float64) * 0.7548776662).reshape(1, spec.channels, h, w).astype(np.float32)


class OnnxModelError(ValueError):
    """An ONNX file that is missing, damaged, not written by 'scgan export', or from a newer scgan."""


def metadata_props(*, calibration: Calibration | None, config: dict[str, Any], spec: InputSpec, default_score: str,
                   version: str, augmentation: str, train_info: dict[str, Any], score_names: tuple[str, ...],
                   reference_scores: np.ndarray) -> dict[str, str]:
    """The string key/value pairs an scgan ONNX file carries (what :class:`OnnxScorer` reads back);
    ``reference_scores`` (K,) are the model's scores of :func:`reference_input`."""
    return {
        META_REFERENCE: json.dumps({"input": REFERENCE_INPUT, "shape": list(reference_input(spec).shape),
                                    "scores": [float(v) for v in np.asarray(reference_scores).reshape(-1)]}),
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
        # Idle threads sleep instead of spinning: on 2 cores a spinning pool took the CPU from everything else in the
        # process (overlays, torch, another session) and scored 2.3x slower (docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
            self.config: dict[str, Any] = migrate_config(json.loads(meta[META_CONFIG]))  # today's layout
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise OnnxModelError(f"{self.path} has damaged scgan metadata ({type(e).__name__}: {e})") from None
        if META_INPUT in meta and META_IMAGE_SIZE in meta and meta[META_IMAGE_SIZE] != str(self.spec.size):
            raise OnnxModelError(f"{self.path} has damaged scgan metadata: {META_IMAGE_SIZE} says "
                                 f"{meta[META_IMAGE_SIZE]!r}, {META_INPUT} size {self.spec.size}; export the model "
                                 "again from its model file")
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
        self._check_graph()
        self._check_reference(meta.get(META_REFERENCE))

    def _refuse(self, what: str) -> OnnxModelError:
        return OnnxModelError(f"{self.path}: {what}; its graph was changed after 'scgan export' wrote it, or it comes "
                              "from another model: export the model again from its model file")

    def _check_graph(self) -> None:
        """The graph's input and outputs against the metadata: names, ranks, channels, the input's side where it is
        fixed, and the number of scores."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if list(inputs) != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise self._refuse(f"its graph takes {list(inputs)} and gives {list(outputs)}, not {INPUT_NAME!r} -> "
                               f"{', '.join(map(repr, OUTPUT_NAMES))}")
        shapes = {"input": (inputs[INPUT_NAME], 4), "scores": (outputs[OUTPUT_NAMES[0]], 2),
                  "anomaly_map": (outputs[OUTPUT_NAMES[1]], 3)}
        for name, (shape, rank) in shapes.items():
            if shape is not None and len(shape) != rank:
                raise self._refuse(f"its graph's {name} has rank {len(shape)}, not {rank}")
        fixed = {"input channels": (inputs[INPUT_NAME], 1, self.spec.channels),
                 "number of scores": (outputs[OUTPUT_NAMES[0]], 1, len(self.score_names))}
        if not self.spec.keep_aspect:
            fixed["input side"] = (inputs[INPUT_NAME], 2, self.spec.size)
        elif inputs[INPUT_NAME] is not None:  # dynamic sides, named by the export after their multiple ("16*h")
            for axis in (2, 3):
                step = re.match(r"^(\d+)\*", str(inputs[INPUT_NAME][axis]))
                if step and int(step.group(1)) != self.spec.multiple:
                    raise self._refuse(f"its graph takes sides in multiples of {step.group(1)}, its metadata says "
                                       f"{self.spec.multiple}")
        for what, (shape, axis, want) in fixed.items():
            have = shape[axis] if shape is not None else None
            if isinstance(have, int) and have != want:
                raise self._refuse(f"its graph's {what} is {have}, its metadata says {want}")

    def _check_reference(self, stored: str | None) -> None:
        """Score :func:`reference_input`: finite, of the right shapes, and (where the export stored them) of the shape
        and with the scores it had when the model was exported, the scores within the parity tolerance
        (:func:`parity_gap`)."""
        x = reference_input(self.spec)
        want = None
        if stored is not None:
            try:
                ref = json.loads(stored)
                want = np.asarray(ref["scores"], dtype=np.float64)
                known = ref["input"] == REFERENCE_INPUT and want.shape == (len(self.score_names),)
                exported = tuple(int(n) for n in ref.get("shape", x.shape))  # files before the shape was stored
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise OnnxModelError(f"{self.path} has damaged scgan metadata ({META_REFERENCE}: {e})") from None
            if not known:
                raise OnnxModelError(f"{self.path} has reference scores this scgan cannot check ({META_REFERENCE}); "
                                     "upgrade scgan or export the model again")
            if exported != x.shape:  # the metadata's input spec was edited: images would be brought to another shape
                raise self._refuse(f"its metadata's input ({META_INPUT} {self.spec.to_dict()}) makes a reference "
                                   f"image of {x.shape}, the model was exported with one of {exported}")
        try:
            scores, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        except Exception as e:  # noqa: BLE001 — onnxruntime raises its own pybind exception types
            raise self._refuse(f"its graph fails on an image of the shape its metadata gives ({type(e).__name__})") \
                from None
        if scores.shape != (1, len(self.score_names)) or maps.shape != (1, *x.shape[2:]):
            raise self._refuse(f"its graph gives scores {scores.shape} and maps {maps.shape} for one image of "
                               f"{x.shape[2]} x {x.shape[3]}, not (1, {len(self.score_names)}) and (1, {x.shape[2]}, "
                               f"{x.shape[3]})")
        if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
            raise self._refuse("it scores nan or infinite values (weights that are not numbers)")
        if want is None:
            log.warning("%s has no reference scores (exported before scgan stored them): its graph's shapes were "
                        "checked, its numbers could not be; export it again to have them checked", self.path)
            return
        gap = parity_gap(scores[0], want)
        if gap is not None:
            diff, allowed, worst = gap
            raise self._refuse(f"its graph scores a reference image {parity_words(diff, allowed)} away from the model "
                               f"it was exported from (score {self.score_names[worst]})")

    @property
    def image_size(self) -> int:
        return self.spec.size

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, K) in ``score_names`` order and anomaly maps (B, H, W) of a float32 (B, C, H, W) batch.

        Images of at least ONE_AT_A_TIME_PIXELS go through the graph one at a time, as torch's PatchCore scorer
        does: a batch's activations and distance matrix leave the CPU's caches (at 320 px, a batch of 16 scored 24%
        fewer images per second than one at a time on 2 cores, docs/performance.md). The numbers are the same.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_batch(x.shape, self.spec)
        if x.shape[0] < 2 or x.shape[2] * x.shape[3] < ONE_AT_A_TIME_PIXELS:
            scores, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
            return scores, maps
        outs = self._one_at_a_time(x)
        return np.concatenate([s for s, _ in outs]), np.concatenate([m for _, m in outs])

    def _one_at_a_time(self, x: np.ndarray) -> list[list[np.ndarray]]:
        """Each image of ``x`` through the graph alone, on one-thread sessions in parallel threads, one per core: on 2
        cores 1.2x the images/s of one session of 2 threads fed one image at a time (docs/performance.md). A single
        image keeps the session of a thread per core (its latency)."""
        import queue
        from concurrent.futures import ThreadPoolExecutor

        from scgan.utils.runinfo import available_cores

        if getattr(self, "_free", None) is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1
            cores = available_cores()
            self._free: queue.Queue = queue.Queue()
            for _ in range(cores):
                self._free.put(ort.InferenceSession(str(self.path), options, providers=self.session.get_providers()))
            self._pool = ThreadPoolExecutor(cores, thread_name_prefix="onnx")

        def one(i: int) -> list[np.ndarray]:
            session = self._free.get()
            try:
                return session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i:i + 1]})
            finally:
                self._free.put(session)

        return list(self._pool.map(one, range(x.shape[0])))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(x)
