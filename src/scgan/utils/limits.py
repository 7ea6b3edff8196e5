"""The ranges of the numbers a user types (batch sizes, workers, image sides, tiles): one place, so that the command
line, a YAML config and the Python API refuse the same values with the same one line.

Each range bounds the work or memory one number can ask for: a typo (``--batch-size 100000``, ``--tile 16`` on a
48-megapixel image) is refused at once instead of running for hours or exhausting memory.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Whole numbers from ``low`` to ``high``, both included; ``why`` says what the bound protects."""

    low: int
    high: int
    why: str = ""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def words(self) -> str:
        return f"a whole number from {self.low} to {self.high}"

    def check(self, name: str, value: object) -> int:
        """``value`` as an int, or ValueError naming ``name``, the value and the allowed range."""
        if value not in self:
            why = f" ({self.why})" if self.why else ""
            raise ValueError(f"{name} must be {self.words()}{why}, got {value!r}")
        return int(value)  # type: ignore[arg-type]


# Images scored at once: memory grows with it; beyond a few hundred nothing gets faster.
BATCH_SIZE = Range(1, 1024, "images held in memory at once")
# Scoring workers of `scgan serve` (threads or processes): each holds a batch; more than the cores only queue.
WORKERS = Range(1, 64, "each holds a batch in memory")
# Worker processes of `scgan serve --processes`: each holds the whole model in memory.
SERVE_PROCESSES = Range(1, 64, "each process holds the model in memory")
# DataLoader worker processes while training or testing (0: load in the main process).
DATA_WORKERS = Range(0, 64, "each is a process")
# The longer side an input is reduced to before scoring (the Detector's max_side): bounds its memory.
MAX_SIDE_RANGE = Range(32, 16384, "an image's memory grows with its square")
# The side every image is brought to (image_size, patchcore.resolution): memory grows with its square.
WORKING_SIDE = Range(32, 4096, "memory grows with its square")
# Images per training step of a network with BatchNorm (two at least).
TRAIN_BATCH_SIZE = Range(2, 1024, "BatchNorm needs two images; memory grows with it")
# Runs of a study at once, and torch threads per run.
JOBS = Range(1, 256, "each run is a process")
THREADS = Range(1, 1024, "torch threads per run")
# The ONNX operator set `scgan export --opset` asks for. The exporter (torch.onnx with dynamo, torch 2.13) writes
# opset 18 and up itself (torch.onnx._internal.exporter._constants.TORCHLIB_OPSET); below 18 it only tries a version
# conversion and, where that fails, silently keeps 18, so a lower number would promise a file it may not write. The
# top is the newest it knows (torch.onnx._constants.ONNX_MAX_OPSET). tests/test_cli_errors.py checks both against the
# torch installed.
EXPORT_OPSET = Range(18, 23, "the opsets the ONNX exporter writes itself")
# `scgan serve`: requests waiting for a worker. Each may hold its upload (up to --max-upload-mb) in memory while it
# waits, so 1024 at the default 20 MiB is already 20 GiB; a longer queue only makes clients wait past their timeout.
SERVE_QUEUE = Range(0, 1024, "each waiting request may hold its upload in memory")
# `scgan serve`: the largest request body in MiB. A body is read into memory whole; 4 GiB is more than any camera
# image in a request of up to 16 files, and more than a process should hold per request.
MAX_UPLOAD_MB = Range(1, 4096, "a request's body is held in memory")
# `scgan serve`: the largest image (width x height) accepted, checked from its header before decoding. A decoded RGB
# image takes 3 bytes a pixel (4 GB at a billion pixels); the largest line-scan and 150-megapixel area cameras stay
# well below it.
MAX_PIXELS = Range(1, 1_000_000_000, "a decoded image takes 3 bytes a pixel")
# `scgan serve`: open connections, idle ones included. Each is a socket (a file descriptor) and a little memory; one
# process serving more than ten thousand (the "C10k" mark) runs out of descriptors on most systems first.
SERVE_CONNECTIONS = Range(1, 10_000, "each is an open file descriptor")
# Tiles of one image (Detector tile=): each is brought to the working resolution and scored; beyond this a run takes
# hours (a 16 px tile on an 8000 x 6000 image would be 333,500 tiles).
MAX_TILES = 4096
