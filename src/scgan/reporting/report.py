"""The test report: report.md and a self-contained report.html with metrics, curves, examples and the config."""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from scgan.reporting.visualize import overlay
from scgan.utils.atomic import atomic_write_bytes, atomic_write_text
from scgan.utils.names import mpl_text, printable
from scgan.utils.tables import is_missing, markdown_table, pct

# Metric keys shown as table columns, in order, with their headers; values are fractions shown as %.
METRIC_COLUMNS: dict[str, str] = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "f1_max": "F1-max",
}
# Other keys whose values are fractions, also shown as %; any other number is shown as it is.
_FRACTION_KEYS = {"accuracy", "precision", "recall", "false_positive_rate", "true_positive_rate", "f1"}
# Top-level keys of metrics.json rendered elsewhere (or passed separately), not as "other entries".
_SHOWN_ELSEWHERE = {"scores", "info", "config", "default_score"}
# Headings of the per-score sub-tables (a dict under each score's entry); other keys are used as they are.
_SUBTABLE_TITLES = {"at_threshold": "Decisions at the validation threshold"}
ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG = "roc.png", "score_hist.png", "examples_most.png", "examples_least.png"
REPORT_FILES = ("report.md", "report.html", ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG)  # all that write_report writes
_NORMAL_COLOR, _ANOMALOUS_COLOR = "#1f77b4", "#d62728"


@dataclass
class ReportExample:
    """One test image for the example grids."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    heat: np.ndarray  # (h, w) anomaly map in [0, 1]; resized to the image if needed
    score: float
    label: int  # 0 normal, 1 anomalous
    mask: np.ndarray | None = None  # (h, w) bool ground truth, drawn as a contour
    decision: str | None = None  # the model's call at its threshold ("anomalous" / "normal"), if calibrated


@dataclass
class _Figure:
    """One PNG of the report: file name, heading, bytes (None when not drawn) and a note."""

    file: str
    heading: str
    png: bytes | None
    note: str = ""


def format_metric(value: Any) -> str:
    """A metric in [0, 1] as a percentage with one decimal ("97.3"); nan/None as "n/a"."""
    if is_missing(value) or isinstance(value, numbers.Real):
        return pct(value)
    return str(value)


def _format_value(value: Any) -> str:
    """Any free-form value in one line: floats with 4 significant digits, nan as "n/a"."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def _plain(value: Any) -> Any:
    """Turn a config (dicts, dataclasses, paths, numpy scalars) into YAML-safe builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _metric_rows(metrics: dict, score_name: str) -> list[tuple[str, dict]]:
    """(score name, its metrics) per row: metrics["scores"], led by the top-level metrics if ``score_name`` lacks a row."""
    per_score = metrics.get("scores")
    rows = [(str(n), dict(v)) for n, v in per_score.items() if isinstance(v, dict)] if isinstance(per_score, dict) else []
    top = {k: metrics[k] for k in METRIC_COLUMNS if k in metrics}
    if top and score_name not in (n for n, _ in rows):
        rows.insert(0, (score_name, top))
    return rows


@dataclass
class _Table:
    """One table of the report: heading, header row and body rows, all as text."""

    heading: str
    header: list[str]
    body: list[list[str]]


def _score_table(heading: str, rows: list[tuple[str, dict]], score_name: str) -> _Table:
    """One row per score: fractions as %, other numbers as they are, text columns (descriptions) last."""
    fractions = set(METRIC_COLUMNS) | _FRACTION_KEYS
    scalars = [(k, v) for _, vals in rows for k, v in vals.items() if not isinstance(v, dict)]
    present = {k for k, _ in scalars}
    keys = [k for k in METRIC_COLUMNS if k in present]
    keys += list(dict.fromkeys(k for k, v in scalars if k not in METRIC_COLUMNS and not isinstance(v, str)))
    text_keys = list(dict.fromkeys(k for k, v in scalars if k not in keys and isinstance(v, str)))
    keys += text_keys
    header = ["score"] + [
        f"{METRIC_COLUMNS.get(k, k.replace('_', ' '))} (%)" if k in fractions else k.replace("_", " ") for k in keys
    ]
    body = []
    for name, vals in rows:
        label = f"{name} (default)" if name == score_name else name
        cells = [
            str(vals.get(k, "")) if k in text_keys
            else format_metric(vals.get(k)) if k in fractions
            else _format_value(vals.get(k))
            for k in keys
        ]
        body.append([label, *cells])
    return _Table(heading, header, body)


def _tables(metrics: dict, score_name: str) -> list[_Table]:
    """The metrics table, then one table per dict-valued entry of the scores (e.g. ``at_threshold``)."""
    rows = _metric_rows(metrics, score_name)
    tables = [_score_table("Metrics", rows, score_name)]
    nested = dict.fromkeys(k for _, vals in rows for k, v in vals.items() if isinstance(v, dict))
    for key in nested:
        sub = [(name, vals[key]) for name, vals in rows if isinstance(vals.get(key), dict)]
        tables.append(_score_table(_SUBTABLE_TITLES.get(key, key), sub, score_name))
    return tables


def _threshold(metrics: dict, score_name: str) -> float | None:
    """The decision threshold from metrics["threshold"]: a number, or a dict with "value" or the score's name."""
    t = metrics.get("threshold")
    if isinstance(t, dict):
        t = t.get("value", t.get(score_name))
    if isinstance(t, numbers.Real) and math.isfinite(float(t)):
        return float(t)
    return None


def _png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes (Agg) and release it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    fig.clear()
    return buf.getvalue()


def _roc_figure(scores: np.ndarray, labels: np.ndarray, score_name: str) -> _Figure:
    """ROC curve of the default score, or a note when the labels hold one class."""
    if labels.size == 0 or labels.all() or not labels.any():
        return _Figure(ROC_PNG, "ROC curve", None, "ROC curve not drawn: the test labels hold only one class.")
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=_ANOMALOUS_COLOR, lw=2, label=mpl_text(f"{score_name} (AUROC {pct(auc, unit='%')})"))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title=mpl_text(f"Image-level ROC: {score_name}"))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _Figure(ROC_PNG, "ROC curve", _png(fig))


def _hist_figure(scores: np.ndarray, labels: np.ndarray, score_name: str, threshold: float | None) -> _Figure:
    """Overlaid histograms of normal and anomalous scores, with the threshold as a vertical line."""
    if scores.size == 0:
        return _Figure(HIST_PNG, "Score histogram", None, "Score histogram not drawn: no test scores.")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    lo, hi = float(scores.min()), float(scores.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    for mask, color, name in ((~labels, _NORMAL_COLOR, "normal"), (labels, _ANOMALOUS_COLOR, "anomalous")):
        if mask.any():
            ax.hist(scores[mask], bins=bins, color=color, alpha=0.55, label=f"{name} (n={int(mask.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.4g}")
    ax.set(xlabel=mpl_text(f"anomaly score ({score_name})"), ylabel="images",
           title=mpl_text(f"Test scores: {score_name}"))
    ax.legend()
    ax.grid(alpha=0.3)
    return _Figure(HIST_PNG, "Score histogram", _png(fig))


def _examples_figure(examples: list[ReportExample], file: str, heading: str) -> _Figure:
    """One row per example: image | heat-map overlay (mask contour, colour bar); name, score, truth and decision."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if not examples:
        return _Figure(file, heading, None, "No examples given.")
    fig = Figure(figsize=(6.6, 3.0 * len(examples)))
    for sub, ex in zip(np.atleast_1d(fig.subfigures(len(examples), 1)), examples):
        truth = "anomalous" if int(ex.label) else "normal"
        call = "" if ex.decision is None else (
            f"  |  decision: {ex.decision}" + (" (correct)" if ex.decision == truth else " (wrong)"))
        sub.suptitle(mpl_text(f"{ex.name}  |  score {float(ex.score):.4g}\nground truth: {truth}{call}"), fontsize=9)
        ax_img, ax_ovl = sub.subplots(1, 2)
        h, w = np.asarray(ex.image).shape[:2]
        ax_img.imshow(ex.image, cmap="gray" if np.asarray(ex.image).ndim == 2 else None, interpolation="antialiased")
        ax_img.set_title(f"image ({w} x {h})", fontsize=8)
        ax_ovl.imshow(overlay(ex.image, ex.heat, ex.mask), interpolation="antialiased")
        ax_ovl.set_title("heat map" + (" + ground truth (white)" if ex.mask is not None else ""), fontsize=8)
        for ax in (ax_img, ax_ovl):
            ax.set_axis_off()
        bar = sub.colorbar(ScalarMappable(Normalize(0.0, 1.0), "jet"), ax=ax_ovl, fraction=0.046, pad=0.02)
        bar.set_label("heat (1 = largest on normal images)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return _Figure(file, heading, _png(fig, dpi=150))


def trivial_f1(labels: np.ndarray) -> float:
    """F1 of calling every image anomalous: 2p / (1 + p) for a share p of anomalous images."""
    p = float(np.mean(np.asarray(labels).astype(bool))) if np.size(labels) else 0.0
    return 2 * p / (1 + p) if p > 0 else 0.0


def _warnings(metrics: dict, labels: np.ndarray) -> list[tuple[str, str]]:
    """Caveats a reader would otherwise miss, as (key, text) rows under the metrics table."""
    out = []
    f1 = metrics.get("f1_max")
    if isinstance(f1, numbers.Real) and not is_missing(f1) and labels.any() and not labels.all():
        trivial = trivial_f1(labels)
        if abs(float(f1) - trivial) < 1e-6:
            out.append(("warning", f"F1-max {100 * float(f1):.1f}% equals the trivial value of calling every test "
                                   f"image anomalous ({100 * trivial:.1f}%): no threshold does better than that"))
    return out


def _markdown(title: str, info_rows: list[tuple[str, str]], tables: list[_Table],
              extra: list[tuple[str, str]], figures: list[_Figure], config_yaml: str) -> str:
    """The report as Markdown that links the PNGs beside it."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", "", "## Run", "", markdown_table(["", ""], info_rows)]
    for i, table in enumerate(tables):
        lines += ["", f"## {table.heading}", "", markdown_table(table.header, table.body)]
        if i == 0:
            lines += ["", _NA_NOTE]
            if extra:
                lines += [""] + [f"- **{cell(k)}**: {cell(v)}" for k, v in extra]
    for fig in figures:
        lines += ["", f"## {fig.heading}", ""]
        lines.append(f"![{fig.heading}]({fig.file})" if fig.png is not None else f"_{fig.note}_")
    lines += ["", "## Config", "", "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)


_NUMBER = re.compile(r"n/a|[-+]?[\d.]+(e[-+]?\d+)?")  # cells right-aligned in the HTML tables
_NA_NOTE = "(%) = percent; n/a = undefined for this test set (e.g. a single class) or not computed."

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.default td { font-weight: 600; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 4px; }
img { max-width: 100%; }
.note { color: #666; font-style: italic; }
"""


def _html(title: str, info_rows: list[tuple[str, str]], tables: list[_Table],
          extra: list[tuple[str, str]], figures: list[_Figure], config_yaml: str, score_name: str) -> str:
    """The report as one self-contained HTML page: inline CSS, PNGs as base64 data URIs."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>", "<h2>Run</h2>", "<table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in info_rows]
    parts.append("</table>")
    for i, table in enumerate(tables):
        parts += [f"<h2>{e(table.heading)}</h2>", "<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr>"]
        for row in table.body:
            cls = ' class="default"' if row[0] == f"{score_name} (default)" else ""
            cells = "".join(f'<td class="num">{e(c)}</td>' if _NUMBER.fullmatch(c) else f"<td>{e(c)}</td>" for c in row[1:])
            parts.append(f"<tr{cls}><td>{e(row[0])}</td>{cells}</tr>")
        parts.append("</table>")
        if i == 0:
            parts.append(f'<p class="note">{e(_NA_NOTE)}</p>')
            if extra:
                parts += ["<ul>"] + [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in extra] + ["</ul>"]
    for fig in figures:
        parts.append(f"<h2>{e(fig.heading)}</h2>")
        if fig.png is not None:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f'<img alt="{e(fig.heading)}" src="data:image/png;base64,{data}">')
        else:
            parts.append(f'<p class="note">{e(fig.note)}</p>')
    parts += ["<h2>Config</h2>", f"<pre>{e(config_yaml)}</pre>", "</body></html>", ""]
    return "\n".join(parts)


def write_report(
    out_dir: Path,
    *,
    title: str,
    metrics: dict,
    config: dict,
    scores: np.ndarray,
    labels: np.ndarray,
    score_name: str,
    examples_top: list[ReportExample],
    examples_bottom: list[ReportExample],
    info: dict | None = None,
) -> tuple[Path, Path]:
    """Write report.md, report.html and their PNGs into ``out_dir``; return (md path, html path).

    ``metrics`` is metrics.json (top-level default-score metrics, ``scores``: {name: metrics}, maybe
    ``threshold``, in the units of ``scores``); ``scores``/``labels`` are the (N,) default scores and 0/1
    labels of the test images; ``examples_top``/``examples_bottom`` the most/least anomalous ones.
    """
    out_dir = Path(out_dir)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have one length, got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model output before writing a report")

    info_rows = [(str(k), _format_value(v)) for k, v in (info or {}).items()]
    info_rows += [("default score", score_name),
                  ("test images", f"{y.size} ({int((~y).sum())} normal, {int(y.sum())} anomalous)")]
    tables = _tables(metrics, score_name)
    extra = _warnings(metrics, y)
    extra += [(str(k), _format_value(v)) for k, v in metrics.items() if k not in METRIC_COLUMNS and k not in _SHOWN_ELSEWHERE]
    config_yaml = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)

    figures = [
        _roc_figure(s, y, score_name),
        _hist_figure(s, y, score_name, _threshold(metrics, score_name)),
        _examples_figure(examples_top, MOST_PNG, "Most anomalous test images"),
        _examples_figure(examples_bottom, LEAST_PNG, "Least anomalous test images"),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    for fig in figures:
        path = out_dir / fig.file
        if fig.png is not None:
            atomic_write_bytes(path, fig.png)
        else:
            path.unlink(missing_ok=True)  # a stale picture from an earlier run would contradict the report

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    # printable: a name or path from the file system need not be UTF-8 (e.g. b"caf\xe9"); escaped, not fatal.
    atomic_write_text(md_path, printable(_markdown(title, info_rows, tables, extra, figures, config_yaml)))
    atomic_write_text(html_path, printable(_html(title, info_rows, tables, extra, figures, config_yaml, score_name)))
    return md_path, html_path
