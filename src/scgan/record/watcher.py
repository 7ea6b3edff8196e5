"""``scgan watch``: score the images that arrive in a folder, each exactly once, and record every decision.

An image is its path and its content (sha256): a camera that reuses a name with new content makes a new image. The
store is the record of what is done: a decision is committed before its CSV row is appended and before its file is
moved, so after a crash or a ``kill -9`` a restart scores what has no decision, moves what was decided but not
moved, and rewrites ``predictions.csv`` from the store where the two disagree.

A file is read only once it is complete: after a close-after-write or a rename into the folder (inotify), or once
its size and modification time have stayed the same for ``settle_s`` seconds (polling, and files found by a scan).
While the database cannot be reached, decisions wait in the spool (:mod:`scgan.record.spool`) and are written when
it is back; the gap is logged and counted.
"""
from __future__ import annotations

import csv
import logging
import os
import queue
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scgan.data.io import is_hidden, is_image_file
from scgan.inference.predict import OVERLAYS, Prediction, overlay_name, prediction_header, prediction_row, write_overlay
from scgan.record.spool import Spool
from scgan.record.store import UNAVAILABLE, Decision, ModelVersion, Store, error_line, sha256_bytes
from scgan.utils.names import printable
from scgan.utils.tables import csv_cells

log = logging.getLogger(__name__)

CSV_NAME = "predictions.csv"
DECISION_FOLDERS = {"anomalous": "anomalous", "normal": "normal", "": "undecided"}


@dataclass
class WatchOptions:
    """How ``scgan watch`` behaves."""

    existing: bool = True  # score the files already in the folder at start (those without a decision)
    move: bool = False  # move each decided file into OUT/normal/ or OUT/anomalous/
    overlays: bool = True  # an overlay PNG for each anomalous image
    captions: bool = True
    poll: bool = False  # poll the folder instead of using file-system events
    poll_interval_s: float = 0.5
    settle_s: float = 1.0  # a file found by polling or a scan is read once unchanged this long
    # A file an event showed being written is read at its close event, or, where that never comes (a file in a
    # folder made a moment before, whose first events the kernel could not report), once unchanged this long.
    unclosed_s: float = 10.0
    rescan_s: float = 300.0  # a full scan this often, for events missed (a folder that came back is scanned at once)
    retry_s: float = 5.0  # how often an unreachable database is tried again
    keep_days: float | None = None  # prune decisions (and their overlays) older than this, hourly


@dataclass
class WatchSummary:
    """What a watch did until it stopped."""

    scored: int = 0
    anomalous: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    gaps: list[tuple[float, float, int]] = field(default_factory=list)  # database away: (from, to, decisions)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    changed: float  # monotonic time of the last change seen
    complete: bool = False  # a close-after-write or a rename said so
    writing: bool = False  # an event showed it being written: wait for its close (or unclosed_s)


class _Events:
    """A watchdog handler that queues (what, path) for the watcher's loop."""

    def __init__(self, q: queue.Queue) -> None:
        self.q = q

    def dispatch(self, event) -> None:
        what = event.event_type
        if what == "moved":
            self.q.put(("dir" if event.is_directory else "complete", event.dest_path))
            self.q.put(("deleted", event.src_path))
        elif event.is_directory:
            if what == "created":
                self.q.put(("dir", event.src_path))
            elif what == "deleted":
                self.q.put(("deleted", event.src_path))
        elif what == "closed":
            self.q.put(("complete", event.src_path))
        elif what in ("created", "modified"):
            self.q.put(("changed", event.src_path))
        elif what == "deleted":
            self.q.put(("deleted", event.src_path))


class Watcher:
    """Watch ``in_dir``; score with ``detector``; record in ``store``, ``out/predictions.csv`` and the overlays."""

    def __init__(self, in_dir: str | os.PathLike[str], out: str | os.PathLike[str], detector, store: Store,
                 options: WatchOptions | None = None) -> None:
        self.in_dir = Path(in_dir).absolute()
        self.root = self.in_dir.resolve()
        self.out = Path(out).absolute()
        if self.out.resolve().is_relative_to(self.root):
            raise ValueError(f"the output folder {printable(self.out)} is inside the watched folder "
                             f"{printable(self.in_dir)}; its overlays would be scored too: put it elsewhere")
        self.key = str(self.root)  # the watch column: which folder a decision came from
        self.detector = detector
        self.store = store
        self.options = options or WatchOptions()
        self.version = ModelVersion.of_detector(detector)
        self.spool = Spool(self.out)
        self.summary = WatchSummary()
        self.names = tuple(detector.score_names)
        self._events: queue.Queue = queue.Queue()
        self._pending: dict[Path, _Pending] = {}
        self._known: dict[Path, tuple[int, int]] = {}  # done or skipped, with (size, mtime_ns) when it was
        self._spooled: set[tuple[str, str]] = set()
        self._outage_since: float | None = None  # wall time the database went away
        self._next_retry = 0.0
        self._observer = None
        self._native = False  # the observer has close-after-write events (inotify)
        self._csv = None
        self._taken: set[str] = set()

    # ---- start and stop ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> WatchSummary:
        """Watch until ``stop`` is set (the image in hand is finished first); the summary."""
        self.store.model_id(self.version)
        self._spooled = {(d.path, d.content_sha256) for d, _ in self.spool.read()}
        if self._spooled:
            self._outage_since = time.time()
        self._prune()  # before the CSV is checked: it mirrors the store
        self._repair_csv()
        self._csv = open(self.out / CSV_NAME, "a", encoding="utf-8", newline="")
        try:
            next_prune = time.monotonic() + 3600
            present = self.in_dir.is_dir()
            if not present:
                log.warning("the watch folder %s does not exist (yet); waiting for it", printable(self.in_dir))
            else:
                self._start_observer()
                self._scan(self.in_dir, initial=True)
            next_scan = time.monotonic() + self.options.rescan_s
            while not stop.is_set():
                now = time.monotonic()
                if self.in_dir.is_dir() != present:
                    present = not present
                    if present:
                        log.warning("the watch folder %s is back; scanning it", printable(self.in_dir))
                        self._start_observer()
                        self._scan(self.in_dir)
                    else:
                        log.warning("the watch folder %s is gone; waiting for it to come back",
                                    printable(self.in_dir))
                        self._stop_observer()
                        self._pending.clear()
                if present and now >= next_scan:
                    self._scan(self.in_dir)
                    next_scan = now + self.options.rescan_s
                if self._outage_since is not None and now >= self._next_retry:
                    self._flush_spool()
                if self.options.keep_days and now >= next_prune:
                    self._prune()
                    next_prune = now + 3600
                self._drain(timeout=0.1)
                for path in self._ready():
                    if stop.is_set():
                        break
                    self._handle(path)
            if self._outage_since is not None:
                self._flush_spool()
        finally:
            self._stop_observer()
            self._csv.close()
        return self.summary

    def _start_observer(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self._stop_observer()
        handler = _Events(self._events)
        observers = [] if self.options.poll else [Observer]
        for cls in [*observers, PollingObserver]:
            obs = cls(timeout=self.options.poll_interval_s) if cls is PollingObserver else cls()
            try:
                obs.schedule(handler, str(self.in_dir), recursive=True)
                obs.start()
            except OSError as e:  # no inotify here, or its limits reached: poll
                log.warning("file-system events unavailable (%s); polling %s every %.1f s", e.strerror or e,
                            printable(self.in_dir), self.options.poll_interval_s)
                continue
            self._observer = obs
            self._native = cls.__name__ == "InotifyObserver"  # the one with close-after-write events
            return

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            try:
                self._observer.join(timeout=5)
            except RuntimeError:
                pass
            self._observer = None

    # ---- finding files ----------------------------------------------------------------------------------------
    def _scan(self, folder: Path, initial: bool = False) -> None:
        """Every file under ``folder`` (hidden ones left out) becomes a candidate; at the first start without
        ``existing`` they are marked as known instead, and only a later change makes them candidates."""
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for name in sorted(filenames):
                if is_hidden(name):
                    continue
                path = Path(dirpath) / name
                if initial and not self.options.existing:
                    st = _stat(path)
                    if st is not None:
                        self._known[path] = (st.st_size, st.st_mtime_ns)
                    continue
                self._candidate(path, complete=False)

    def _candidate(self, path: Path, complete: bool, changed: bool = False) -> None:
        if is_hidden(path.relative_to(self.in_dir)):
            return  # hidden: a writer's temporary file, renamed into place when complete
        st = _stat(path)
        if st is None:
            return
        complete = complete or path.is_symlink()  # a link is made whole at once
        ident = (st.st_size, st.st_mtime_ns)
        if not changed and self._known.get(path) == ident:
            return
        self._known.pop(path, None)
        p = self._pending.get(path)
        if p is None or (p.size, p.mtime_ns) != ident or changed:
            self._pending[path] = _Pending(*ident, changed=time.monotonic(), complete=complete,
                                           writing=changed and self._native and not complete)
        elif complete:
            p.complete = True

    def _drain(self, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            what, raw = item
            path = Path(os.fsdecode(raw))
            try:
                path.relative_to(self.in_dir)
            except ValueError:
                path = None
            if path is not None and path != self.in_dir:
                if what == "deleted":
                    self._pending.pop(path, None)
                    self._known.pop(path, None)
                elif what == "dir":
                    self._scan(path)
                else:
                    self._candidate(path, complete=what == "complete", changed=what == "changed")
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    def _ready(self) -> list[Path]:
        """Pending files that are complete (an event said so, or unchanged for ``settle_s``), oldest first."""
        now = time.monotonic()
        out = []
        for path, p in list(self._pending.items()):
            st = _stat(path)
            if st is None:
                del self._pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (p.size, p.mtime_ns):
                p.size, p.mtime_ns, p.changed, p.complete = st.st_size, st.st_mtime_ns, now, False
                continue
            if p.complete or now - p.changed >= (self.options.unclosed_s if p.writing else self.options.settle_s):
                out.append(path)
        return sorted(out, key=lambda q: self._pending[q].changed)

    # ---- one file ---------------------------------------------------------------------------------------------
    def _skip(self, path: Path, reason: str, ident: tuple[int, int] | None, level: int = logging.WARNING) -> None:
        log.log(level, "skipped %s: %s", printable(path), reason)
        self.summary.skip(reason.split(" (")[0])
        if ident is not None:
            self._known[path] = ident

    def _handle(self, path: Path) -> None:
        p = self._pending.pop(path)
        ident = (p.size, p.mtime_ns)
        target = path.resolve()  # the file itself a link, or a folder above it (polling lists a linked folder's)
        if not target.is_relative_to(self.root):
            return self._skip(path, f"a symbolic link to {printable(target)}, outside the watched folder "
                                    "(not followed)", ident)
        if not is_image_file(path):
            return self._skip(path, "not an image file", ident)
        try:
            with open(path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return self._skip(path, "not a regular file", ident)
                data = f.read()
        except FileNotFoundError:
            return self._skip(path, "removed before it could be read", None, logging.INFO)
        except OSError as e:
            return self._skip(path, f"cannot be read ({e.strerror or e})", ident)
        sha = sha256_bytes(data)
        key = str(self.root / path.relative_to(self.in_dir))
        if self._is_done(key, sha):
            self._known[path] = ident
            if self.options.move:
                self._move(path, self._decided_folder(key, sha), sha)
            return None
        outcome = next(self.detector.iter_predict([data]))
        if outcome.result is None:
            return self._skip(path, f"unreadable as an image ({outcome.error})", ident)
        r = outcome.result
        rel = path.relative_to(self.in_dir)
        ov = None
        if self.options.overlays and r.anomalous:
            name = overlay_name(rel.with_name(f"{rel.stem}_{sha[:8]}{rel.suffix}"), self._taken)
            ov = write_overlay(self.out / OVERLAYS / name, r, path, captions=self.options.captions)
        d = Decision.of_result(r, path=key, content_sha256=sha, size=len(data), source="watch", watch=self.key,
                               overlay=ov)
        recorded = self._record(d)
        if recorded is None:  # neither the store nor the spool could take it (a full disk): try again later
            self._pending[path] = _Pending(*ident, changed=time.monotonic() + self.options.retry_s)
            return None
        self._known[path] = ident
        if recorded:
            self._append_csv(d)
            self.summary.scored += 1
            self.summary.anomalous += d.decision == "anomalous"
            log.info("%s %s", d.decision or "scored", printable(path))
        if self.options.move:
            self._move(path, d.decision, sha)
        return None

    def _is_done(self, key: str, sha: str) -> bool:
        if (key, sha) in self._spooled:
            return True
        try:
            return self.store.is_done(self.key, key, sha)
        except UNAVAILABLE as e:
            self._went_away(e)
            return False  # the spool's writing skips it if the store had it after all

    def _decided_folder(self, key: str, sha: str) -> str:
        for d, _ in self.spool.read() if (key, sha) in self._spooled else []:
            if (d.path, d.content_sha256) == (key, sha):
                return d.decision
        from scgan.record.queries import decision_of

        return decision_of(self.store, self.key, key, sha) or ""

    def _record(self, d: Decision) -> bool | None:
        """Commit ``d`` to the store, or to the spool while the store is away: True when recorded, False when the
        image was recorded already (by another process), None when neither could take it."""
        if self._outage_since is None:
            try:
                return self.store.add(d, self.version)
            except UNAVAILABLE as e:
                self._went_away(e)
        try:
            self.spool.append(d, self.version)
        except OSError as e:
            log.error("cannot record %s: the store is away and the spool cannot be written (%s); trying again",
                      printable(d.path), e.strerror or e)
            return None
        self._spooled.add((d.path, d.content_sha256))
        return True

    def _went_away(self, e: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.time()
            log.warning("the results store %s cannot be reached (%s); decisions wait in %s until it is back",
                        self.store.name, error_line(e), printable(self.spool.path))
        self._next_retry = time.monotonic() + self.options.retry_s

    def _flush_spool(self) -> None:
        items = self.spool.read()
        try:
            added = 0
            for version in {v for _, v in items}:
                added += self.store.add_many([d for d, v in items if v == version], version)
        except UNAVAILABLE:
            self._next_retry = time.monotonic() + self.options.retry_s
            return
        self.spool.clear()
        since, now = self._outage_since or time.time(), time.time()
        self._outage_since = None
        self._spooled.clear()
        self.summary.gaps.append((since, now, added))
        log.warning("the results store is back: %d decision(s) kept in the spool during a gap of %.0f s "
                    "(from %s to %s) are written", added, now - since, _iso(since), _iso(now))

    def _move(self, path: Path, decision: str, sha: str) -> None:
        rel = path.relative_to(self.in_dir)
        target = self.out / DECISION_FOLDERS.get(decision, "undecided") / rel
        if target.exists() or target.is_symlink():
            target = target.with_name(f"{rel.stem}_{sha[:8]}{rel.suffix}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not move %s to %s: %s", printable(path), printable(target), e.strerror or e)
        else:
            self._known.pop(path, None)

    # ---- predictions.csv --------------------------------------------------------------------------------------
    def _csv_row(self, d: Decision) -> list:
        anomalous = {"anomalous": True, "normal": False}.get(d.decision)
        p = Prediction(d.path, d.scores, d.score_normalized, anomalous, d.overlay)
        return csv_cells(prediction_row(p, self.names, d.score_name, d.threshold, d.threshold_normalized))

    def _append_csv(self, d: Decision) -> None:
        csv.writer(self._csv).writerow(self._csv_row(d))
        self._csv.flush()

    def _repair_csv(self) -> None:
        """Rewrite predictions.csv from the store (and spool) when its rows are not the store's: a crash between a
        commit and its row, a torn last line, another model's columns."""
        path = self.out / CSV_NAME
        header = prediction_header(self.names)
        expected = self.store.count_watched(self.key) + len(self._spooled)
        try:
            text = path.read_text(encoding="utf-8")
            rows = list(csv.reader(text.splitlines()))
            if text.endswith("\n") and rows and rows[0] == header and len(rows) - 1 == expected:
                return
            had = max(len(rows) - 1, 0)
        except FileNotFoundError:
            had = None
        except (OSError, UnicodeDecodeError, csv.Error):
            had = -1
        tmp = path.with_name(f".{CSV_NAME}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for d in self.store.watched(self.key):
                w.writerow(self._csv_row(d))
            for d, _ in self.spool.read():
                w.writerow(self._csv_row(d))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if had is not None and expected:
            log.warning("%s had %s row(s), the store %d: rewritten from the store", printable(path),
                        "unreadable" if had < 0 else had, expected)

    def _prune(self) -> None:
        if not self.options.keep_days:
            return
        try:
            rows, files = self.store.prune(self.options.keep_days)
        except UNAVAILABLE as e:
            self._went_away(e)
            return
        if rows:
            log.warning("pruned %d decision(s) older than %g days and %d overlay(s)", rows, self.options.keep_days,
                        files)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
