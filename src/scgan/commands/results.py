"""``scgan results``: find decisions again in a results store: list, count per day and model version, export, prune."""
from __future__ import annotations

import argparse
import datetime as dt

from scgan.commands.common import positive_float, positive_int

HELP = "list, count, export or prune the decisions in a results store (scgan watch, predict --db, serve --db)"
ACTIONS = ("list", "counts", "export", "prune")


def _when(text: str) -> dt.datetime:
    """An ISO date or time ("2026-12-01", "2026-12-01T08:00"); UTC unless it names its zone."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date or time like 2026-12-01 or 2026-12-01T08:00, "
                                         f"got {text!r}") from None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _score(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _g(value: float | None) -> str:
    """A score with 4 significant digits (scores range from 1e-5 to thousands by model), "n/a" when missing."""
    return "n/a" if value is None else f"{value:.4g}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=ACTIONS, default="list",
                   help="list (the newest, default), counts (per day and model version, with the marks made on the "
                        "service's page), export (CSV), prune")
    p.add_argument("--db", default=None, metavar="URL",
                   help="the store: a SQLAlchemy URL, a SQLite file, or an output folder holding results.db "
                        "(default: $SCGAN_DB_URL)")
    p.add_argument("--since", type=_when, default=None, metavar="TIME", help="from this ISO date or time (UTC)")
    p.add_argument("--until", type=_when, default=None, metavar="TIME", help="before this ISO date or time (UTC)")
    p.add_argument("--decision", choices=("anomalous", "normal"), default=None)
    p.add_argument("--model", default=None, metavar="SHA256", help="one model version: its file's sha256 (a prefix)")
    p.add_argument("--score-above", type=_score, default=None, metavar="SCORE",
                   help="decisions whose deciding score is above this")
    p.add_argument("--source", choices=("watch", "predict", "serve"), default=None)
    p.add_argument("--limit", type=positive_int, default=100, help="list: how many of the newest (default 100)")
    p.add_argument("--by", choices=("day", "model"), action="append", default=None,
                   help="counts: per day, per model version (default both)")
    p.add_argument("--to", default="-", metavar="FILE", help="export: the CSV file (default - : standard output)")
    p.add_argument("--keep-days", type=positive_float, default=None, metavar="DAYS",
                   help="prune: delete decisions older than this, and their overlays")


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from scgan.record import require

    require()
    from scgan.data.feedback import LABELS
    from scgan.record.queries import Filter, counts, export_csv, latest
    from scgan.record.store import Store
    from scgan.record.url import resolve_url, sqlite_file
    from scgan.utils.atomic import atomic_open
    from scgan.utils.tables import markdown_table, pct

    url = resolve_url(args.db)
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no results store at {path}; name one with --db (a URL, a SQLite file, or the "
                                "output folder of scgan watch)")
    flt = Filter(since=args.since, until=args.until, decision=args.decision, model=args.model,
                 score_above=args.score_above, source=args.source)
    with Store(url) as store:
        if args.action == "prune":
            if args.keep_days is None:
                raise ValueError("scgan results prune needs --keep-days DAYS")
            rows, files = store.prune(args.keep_days)
            print(f"pruned {rows} decision(s) older than {args.keep_days:g} days and {files} overlay file(s) "
                  f"from {store.name}")
        elif args.action == "export":
            if args.to == "-":
                try:
                    export_csv(store, sys.stdout, flt)
                    sys.stdout.flush()
                except BrokenPipeError:  # the reader stopped (| head): not an error
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            else:
                with atomic_open(args.to, "w", newline="", encoding="utf-8") as f:
                    n = export_csv(store, f, flt)
                print(f"exported {n} decision(s) to {args.to}")
        elif args.action == "counts":
            for by in args.by or ("day", "model"):
                rows = counts(store, by, flt)
                print(markdown_table([by if by == "day" else "model (sha256, preset)", "decisions", "anomalous",
                                      "rate %", *(f"marked {label}" for label in LABELS)],
                                     [[r.group, r.total, r.anomalous, pct(r.rate), *(r.marks.get(k, 0) for k in LABELS)]
                                      for r in rows]))
                print()
        else:
            rows = latest(store, flt, args.limit)
            print(markdown_table(["time (UTC)", "decision", "score", "threshold", "model", "path", "overlay"],
                                 [[r["time"], r["decision"], _g(r["score"]), _g(r["threshold"]),
                                   r["model_sha256"][:12], r["path"], r["overlay"] or ""] for r in rows]))
            print(f"{len(rows)} decision(s), newest first (--limit {args.limit})")
    return 0
