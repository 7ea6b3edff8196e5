"""``scgan predict --engine ray``: the same scoring as ``scgan predict``, spread over a Ray cluster (Ray Data).

The driver lists the files and names their overlays as the local run does, then streams them through a pool of
scoring actors (each a :class:`scgan.inference.detector.Detector` on one CPU), never holding every image: each actor
reads its files, scores them and writes their overlays into the output folder; the driver receives one small row
per image and appends it to ``ray_rows.jsonl`` there before anything else. So every node must reach the model file,
the images and the output folder by the same paths (a shared file system). A restarted driver reads that journal and
scores only the files it lacks; a row that comes twice (a batch retried after a worker died) is kept once. At the
end ``predictions.csv`` and ``manifest.json`` are written as the local run writes them. Ray is imported only here,
and only when asked (``pip install 'scgan[cluster]'``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scgan.data.io import expand_inputs
from scgan.inference.predict import (
    OVERLAYS,
    Prediction,
    PredictOutput,
    _csv,
    overlay_name,
    write_overlay,
)
from scgan.utils.lock import locked_output
from scgan.utils.manifest import file_sha256, write_manifest
from scgan.utils.names import printable

log = logging.getLogger(__name__)

INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'scgan[cluster]'"
JOURNAL = "ray_rows.jsonl"  # one JSON row per input scored (or skipped), appended as they come


def import_ray():
    """The ``ray`` module with Ray Data, or ImportError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ray


def connect(address: str | None, workers: int):
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to; "HOST:PORT": its head), or
    start a local one of ``workers`` CPUs when None. ConnectionError in one line where no cluster answers."""
    ray = import_ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own progress bar says how far it is
    ray.data.DataContext.get_current().enable_progress_bars = False
    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError):
            raise ConnectionError(f"no Ray cluster answers at {address}: start one there with 'ray start --head' "
                                  "or give its head's HOST:PORT") from None
    if ray.is_initialized():  # this process already joined one (a test's local cluster)
        return ray
    # Ray's driver takes SIGTERM and SIGINT over; this process's own handlers (Lightning's, a watcher's, a test
    # run's) are put back, so that a signal means here what it meant before the cluster was joined.
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as e:
        raise ConnectionError(f"no Ray cluster at {address!r} ({str(e).splitlines()[0][:160]}): start one with "
                              "'ray start --head', or leave out --address for a local one") from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return ray


class ScoreFiles:
    """A Ray Data actor: scores batches of files with its own Detector and writes their overlays."""

    def __init__(self, model: str, backend: str, batch_size: int, out: str, overlays: bool, captions: bool) -> None:
        from scgan.inference.detector import Detector

        self.detector = Detector.load(model, backend=backend, batch_size=batch_size)
        self.out, self.overlays, self.captions = Path(out), overlays, captions

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        paths = [str(p) for p in batch["path"]]
        names = [str(n) for n in batch["overlay"]]
        rows: dict[str, list] = {"index": [int(i) for i in batch["index"]], "row": []}
        for outcome in self.detector.iter_predict(paths, skip_errors=True):
            path = paths[outcome.index]
            r = outcome.result
            if r is None:
                rows["row"].append(json.dumps({"path": path, "error": outcome.error or "unreadable"}))
                continue
            ov = None
            if self.overlays:
                ov = write_overlay(self.out / OVERLAYS / names[outcome.index], r, Path(path), captions=self.captions)
            rows["row"].append(json.dumps({"path": path, "scores": r.scores, "normalized": r.normalized,
                                           "anomalous": r.anomalous, "overlay": ov}))
        return rows


def _read_journal(path: Path, model_sha256: str) -> dict[str, dict]:
    """The rows an earlier driver recorded for the model ``model_sha256``, by resolved input path. A journal of
    another model (or none) gives nothing, and so does a line cut by a crash (the next append starts a new line)."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        head = json.loads(lines[0]) if lines else {}
    except ValueError:
        head = {}
    if head.get("model_sha256") != model_sha256:
        if lines:
            log.warning("%s was written for another model: its rows are not reused", printable(path))
        return rows
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            rows[str(entry["path"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return rows


def _open_journal(path: Path, model_sha256: str, fresh: bool):
    """The journal opened for appending: started anew (its head naming the model) when ``fresh``; else on a line
    of its own after a last line a crash may have cut."""
    if fresh or not path.is_file():
        f = open(path, "w", encoding="utf-8")
        f.write(json.dumps({"model_sha256": model_sha256}) + "\n")
        return f
    with open(path, "rb") as r:
        size = r.seek(0, os.SEEK_END)
        if size:
            r.seek(size - 1)
        torn = size > 0 and r.read(1) != b"\n"
    f = open(path, "a", encoding="utf-8")
    if torn:
        f.write("\n")
    return f


def run_predict_ray(inputs: Iterable[str | Path], output_dir: str | Path, *, model: str, backend: str = "auto",
                    batch_size: int = 16, overlays: bool = True, captions: bool = True, progress: bool = True,
                    address: str | None = None, workers: int = 2, actor: type = ScoreFiles) -> PredictOutput:
    """Score ``inputs`` as :func:`scgan.inference.predict.run_predict` does, on Ray (``address``: a cluster, or
    None for a local one of ``workers`` CPUs), resuming from the output folder's journal. ``actor`` is the scoring
    actor's class (:class:`ScoreFiles`, or a subclass of it)."""
    from scgan.inference.detector import Detector

    files = expand_inputs(inputs)
    model = os.path.abspath(model)
    model_sha256 = file_sha256(model)  # the journal's rows are this model's only
    head = Detector.load(model, backend=backend)  # the model's own errors here, in one line, before any cluster
    ray = connect(address, workers)
    with locked_output(output_dir, "predicting") as out:
        journal = out / JOURNAL
        by_path = _read_journal(journal, model_sha256)
        taken: set[str] = set()
        names = [overlay_name(f.relative, taken) for f in files]  # as the local run names them
        resolved = [str(Path(f.path).resolve()) for f in files]
        done = {i: by_path[p] for i, p in enumerate(resolved) if p in by_path}
        todo = [{"index": i, "path": resolved[i], "overlay": names[i]} for i in range(len(files)) if i not in done]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(files), initial=len(files) - len(todo), desc="predict (ray)", disable=None)
        try:
            if todo:
                ds = ray.data.from_items(todo).map_batches(
                    actor, batch_size=batch_size, num_cpus=1,
                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers)),
                    fn_constructor_kwargs={"model": model, "backend": backend, "batch_size": batch_size,
                                           "out": str(out), "overlays": overlays, "captions": captions})
                with _open_journal(journal, model_sha256, fresh=not by_path) as f:
                    for batch in ds.iter_batches(batch_size=None):
                        for index, row in zip(batch["index"], batch["row"]):
                            index = int(index)
                            if index in done:  # a batch retried after its worker died: already recorded
                                continue
                            entry = {"index": index, **json.loads(row)}
                            f.write(json.dumps(entry) + "\n")
                            done[index] = entry
                            if bar:
                                bar.update(1)
                        f.flush()
                        os.fsync(f.fileno())
        finally:
            if bar:
                bar.close()
        preds, skipped, written = [], [], []
        for i, f in enumerate(files):
            entry = done.get(i)
            if entry is None:
                continue
            if "error" in entry:
                skipped.append((str(f.path), entry["error"]))
                log.warning("skipped %s: %s", printable(f.path), printable(entry["error"]))
                continue
            preds.append(Prediction(str(f.path), entry["scores"], entry["normalized"], entry["anomalous"],
                                    None if entry["overlay"] is None else str(out / OVERLAYS / names[i])))
            if entry["overlay"] is not None:
                written.append(f"{OVERLAYS}/{names[i]}")
        csv_path = out / "predictions.csv"
        from scgan.utils.atomic import atomic_write_text

        atomic_write_text(csv_path, _csv(preds, skipped, head.score_names, head.default_score, head.threshold,
                                         head.threshold_normalized))
        write_manifest(out, [*written, "predictions.csv", JOURNAL], command="scgan predict --engine ray",
                       model=printable(model), scored=len(preds), skipped=len(skipped))
    return PredictOutput(preds, skipped, csv_path)
