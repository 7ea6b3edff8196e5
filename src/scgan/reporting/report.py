"""The test report: report.md and a self-contained report.html.

It leads with what a user acts on: the decisions at the model's threshold (catch rate per defect type, false-alarm
rate) beside AUROC, pixel AUROC and AUPRO; then the defects it missed and its false alarms (image, heat map, mask);
then the details: how the score was chosen, every score's metrics, curves, the most and least anomalous images,
the run, and the config last.
"""
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
_SHOWN_ELSEWHERE = {"scores", "info", "config", "default_score", "at_threshold", "score_selection",
                    "calibration_warning", "threshold_normalized"}
# Headings of the per-score sub-tables (a dict under each score's entry); other keys are used as they are.
_SUBTABLE_TITLES = {"at_threshold": "Decisions at the validation threshold"}
ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG = "roc.png", "score_hist.png", "examples_most.png", "examples_least.png"
MISSED_PNG, ALARMS_PNG = "missed_defects.png", "false_alarms.png"
REPORT_FILES = ("report.md", "report.html", ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG,  # all that write_report writes
                MISSED_PNG, ALARMS_PNG)
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
    """(score name, its metrics) per row: metrics["scores"], led by the top-level metrics if ``score_name`` lacks
    a row."""
    per_score = metrics.get("scores") if isinstance(metrics.get("scores"), dict) else {}
    rows = [(str(n), dict(v)) for n, v in per_score.items() if isinstance(v, dict)]
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


def _examples_figure(examples: list[ReportExample], file: str, heading: str,
                     heat_ticks: list[tuple[float, str]] | None = None, note: str = "") -> _Figure:
    """One row per example: image | heat-map overlay (mask contour, colour bar) | ground-truth mask, under a title
    with its name, score, truth and decision. Constrained layout keeps titles apart."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if not examples:
        return _Figure(file, heading, None, note or "No examples given.")
    fig = Figure(figsize=(9.0, 3.3 * len(examples)), layout="constrained")
    for sub, ex in zip(np.atleast_1d(fig.subfigures(len(examples), 1)), examples):
        truth = "anomalous" if int(ex.label) else "normal"
        call = "" if ex.decision is None else (
            f"  |  decision: {ex.decision}" + (" (correct)" if ex.decision == truth else " (wrong)"))
        sub.suptitle(mpl_text(f"{ex.name}  |  score {float(ex.score):.4g}\nground truth: {truth}{call}"), fontsize=9)
        ax_img, ax_ovl, ax_mask = sub.subplots(1, 3)
        img = np.asarray(ex.image)
        h, w = img.shape[:2]
        ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="antialiased")
        ax_img.set_title(f"image ({w} x {h})", fontsize=8)
        ax_ovl.imshow(overlay(ex.image, ex.heat, ex.mask), interpolation="antialiased")
        ax_ovl.set_title("heat map" + (" + defect outline (white)" if ex.mask is not None else ""), fontsize=8)
        if ex.mask is not None:
            ax_mask.imshow(np.asarray(ex.mask, dtype=float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax_mask.set_title("ground-truth mask", fontsize=8)
        else:
            ax_mask.text(0.5, 0.5, "no defect mask" if int(ex.label) else "normal image:\nno defect",
                         ha="center", va="center", fontsize=8, color="#666", transform=ax_mask.transAxes)
        for ax in (ax_img, ax_ovl, ax_mask):
            ax.set_axis_off()
        bar = sub.colorbar(ScalarMappable(Normalize(0.0, 1.0), "jet"), ax=ax_ovl, fraction=0.046, pad=0.02)
        ticks = heat_ticks or [(0.0, "0"), (1.0, "1")]
        bar.set_ticks([t for t, _ in ticks], labels=[mpl_text(label) for _, label in ticks])
        bar.set_label("map value", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return _Figure(file, heading, _png(fig, dpi=110), note)


def trivial_f1(labels: np.ndarray) -> float:
    """F1 of calling every image anomalous: 2p / (1 + p) for a share p of anomalous images."""
    p = float(np.mean(np.asarray(labels).astype(bool))) if np.size(labels) else 0.0
    return 2 * p / (1 + p) if p > 0 else 0.0


def _warnings(metrics: dict, labels: np.ndarray) -> list[tuple[str, str]]:
    """Caveats a reader would otherwise miss, as (key, text) rows under the results."""
    out = []
    if metrics.get("calibration_warning"):
        out.append(("warning", str(metrics["calibration_warning"])))
    f1 = metrics.get("f1_max")
    if isinstance(f1, numbers.Real) and not is_missing(f1) and labels.any() and not labels.all():
        trivial = trivial_f1(labels)
        if abs(float(f1) - trivial) < 1e-6:
            out.append(("warning", f"F1-max {100 * float(f1):.1f}% equals the trivial value of calling every test "
                                   f"image anomalous ({100 * trivial:.1f}%): no threshold does better than that"))
    return out


# ---- the document: a list of blocks that both renderers walk ------------------------------------------------
@dataclass
class _Block:
    """One piece of the report: a heading (level 2 or 3), a paragraph, a table, a bullet list, a figure or code."""

    kind: str  # "h2", "h3", "p", "table", "list", "figure", "pre"
    value: Any


def _decision_sentence(d: dict, score_name: str, cal_info: str) -> str:
    norm = "" if d.get("threshold_normalized") is None else f", normalised {d['threshold_normalized']:.3g}"
    return (f"At its own threshold ({score_name} > {d['threshold']:.4g}{norm}{cal_info}) the model catches "
            f"{d['caught']} of {d['defective']} defective test images ({pct(d['catch_rate'], unit='%')}) and raises "
            f"false alarms on {d['false_alarms']} of {d['normal']} normal ones "
            f"({pct(d['false_alarm_rate'], unit='%')}).")


def _decision_table(d: dict) -> _Table:
    """Per defect type: images, how many the threshold calls anomalous, and the rate; the normal images last."""
    body = [["all defective images (catch rate)", str(d["defective"]), str(d["caught"]), pct(d["catch_rate"])]]
    body += [[f"defect: {name}", str(v["images"]), str(v["caught"]), pct(v["catch_rate"])]
             for name, v in d.get("by_defect", {}).items()]
    body.append(["normal images (false-alarm rate)", str(d["normal"]), str(d["false_alarms"]),
                 pct(d["false_alarm_rate"])])
    return _Table("", ["test images", "images", "called anomalous", "rate (%)"], body)


def _headline_table(metrics: dict, score_name: str) -> _Table:
    keys = [k for k in METRIC_COLUMNS if k in metrics]
    return _Table("", ["score", *(f"{METRIC_COLUMNS[k]} (%)" for k in keys)],
                  [[f"{score_name} (default)", *(format_metric(metrics.get(k)) for k in keys)]])


def _selection_blocks(sel: dict) -> list[_Block]:
    """score_selection as a sentence and a table: each score's separation AUROC (mean, and per strength)."""
    blocks = [_Block("p", f"Rule: {sel.get('rule', 'n/a')}.")]
    mean = sel.get("separation_auroc") or {}
    by_strength = sel.get("separation_auroc_by_strength") or {}
    header = ["score", "separation AUROC (%)" + (", mean" if by_strength else "")]
    header += [f"at strength {a} (%)" for a in by_strength]
    body = []
    for name, v in mean.items():
        chosen = " (selected)" if name == sel.get("selected") else ""
        body.append([f"{name}{chosen}", pct(v), *(pct(row.get(name)) for row in by_strength.values())])
    if body:
        blocks.append(_Block("table", _Table("", header, body)))
    return blocks


def _markdown(title: str, blocks: list[_Block]) -> str:
    """The report as Markdown that links the PNGs beside it."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}"]
    for b in blocks:
        if b.kind in ("h2", "h3"):
            lines += ["", f"{'#' * int(b.kind[1])} {b.value}"]
        elif b.kind == "p":
            lines += ["", b.value]
        elif b.kind == "table":
            lines += ["", markdown_table(b.value.header, b.value.body)]
        elif b.kind == "list":
            lines += [""] + [f"- **{cell(k)}**: {cell(v)}" for k, v in b.value]
        elif b.kind == "figure":
            fig = b.value
            if fig.png is not None:
                lines += ["", f"![{fig.heading}]({fig.file})"] + (["", f"_{fig.note}_"] if fig.note else [])
            else:
                lines += ["", f"_{fig.note}_"]
        elif b.kind == "pre":
            lines += ["", "```yaml", b.value.rstrip("\n"), "```"]
    return "\n".join(lines + [""])


_NUMBER = re.compile(r"n/a|[-+]?[\d.]+(e[-+]?\d+)?")  # cells right-aligned in the HTML tables
_NA_NOTE = "(%) = percent; n/a = undefined for this test set (e.g. a single class) or not computed."

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; margin-bottom: .4em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
h3 { margin-top: 1.3em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.default td, tr.total td { font-weight: 600; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 4px; }
img { max-width: 100%; }
.note { color: #666; font-style: italic; }
p.lead { font-size: 1.1em; }
li.warning { color: #a33; }
"""


def _html(title: str, blocks: list[_Block], score_name: str) -> str:
    """The report as one self-contained HTML page: inline CSS, PNGs as base64 data URIs."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    lead = True
    for b in blocks:
        if b.kind in ("h2", "h3"):
            parts.append(f"<{b.kind}>{e(b.value)}</{b.kind}>")
        elif b.kind == "p":
            cls = ' class="lead"' if lead else (' class="note"' if b.value == _NA_NOTE else "")
            parts.append(f"<p{cls}>{e(b.value)}</p>")
            lead = False
        elif b.kind == "table":
            t = b.value
            parts += ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>"]
            for row in t.body:
                cls = ' class="default"' if row[0] == f"{score_name} (default)" else (
                    ' class="total"' if row[0].startswith(("all defective", "normal images (")) else "")
                cells = "".join(f'<td class="num">{e(c)}</td>' if _NUMBER.fullmatch(c) else f"<td>{e(c)}</td>"
                                for c in row[1:])
                parts.append(f"<tr{cls}><td>{e(row[0])}</td>{cells}</tr>")
            parts.append("</table>")
        elif b.kind == "list":
            parts += ["<ul>"] + [f'<li class="{e(k)}"><b>{e(k)}</b>: {e(v)}</li>' for k, v in b.value] + ["</ul>"]
        elif b.kind == "figure":
            fig = b.value
            if fig.png is not None:
                data = base64.b64encode(fig.png).decode("ascii")
                parts.append(f'<img alt="{e(fig.heading)}" src="data:image/png;base64,{data}">')
            if fig.note:
                parts.append(f'<p class="note">{e(fig.note)}</p>')
        elif b.kind == "pre":
            parts.append(f"<pre>{e(b.value)}</pre>")
    parts += ["</body></html>", ""]
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
    missed: list[ReportExample] | None = None,
    false_alarms: list[ReportExample] | None = None,
    heat_ticks: list[tuple[float, str]] | None = None,
    heat_legend: str | None = None,
) -> tuple[Path, Path]:
    """Write report.md, report.html and their PNGs into ``out_dir``; return (md path, html path).

    ``metrics`` is metrics.json (top-level default-score metrics, ``at_threshold``: the decisions per defect type,
    ``scores``: {name: metrics}, maybe ``threshold``, in the units of ``scores``); ``scores``/``labels`` are the
    (N,) default scores and 0/1 labels of the test images; ``examples_top``/``examples_bottom`` the most/least
    anomalous ones; ``missed``/``false_alarms`` the defective images called normal and the normal ones called
    anomalous (None: not known, no section); ``heat_ticks``/``heat_legend`` say what the heat-map colours mean.
    """
    out_dir = Path(out_dir)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have one length, got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model output before writing a report")

    info = dict(info or {})
    info_rows = [(str(k), _format_value(v)) for k, v in info.items()]
    info_rows += [("default score", score_name),
                  ("test images", f"{y.size} ({int((~y).sum())} normal, {int(y.sum())} anomalous)")]
    config_yaml = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
    legend = f"Heat-map colours: {heat_legend}." if heat_legend else ""

    figures = {
        "roc": _roc_figure(s, y, score_name),
        "hist": _hist_figure(s, y, score_name, _threshold(metrics, score_name)),
        "most": _examples_figure(examples_top, MOST_PNG, "Most anomalous test images", heat_ticks, legend),
        "least": _examples_figure(examples_bottom, LEAST_PNG, "Least anomalous test images", heat_ticks, legend),
    }
    if missed is not None:
        figures["missed"] = _examples_figure(missed, MISSED_PNG, "Missed defects", heat_ticks,
                                             legend if missed else "None: the threshold caught every defective image.")
    if false_alarms is not None:
        figures["alarms"] = _examples_figure(false_alarms, ALARMS_PNG, "False alarms", heat_ticks,
                                             legend if false_alarms else "None: no normal image was called anomalous.")

    # ---- results first
    blocks = [_Block("h2", "Results")]
    d = metrics.get("at_threshold")
    if isinstance(d, dict) and "caught" in d:
        cal_info = ""
        if d.get("quantile") is not None and d.get("calibration_images") is not None:
            cal_info = f": the {d['quantile']:g} quantile of {d['calibration_images']} normal validation images"
        blocks.append(_Block("p", _decision_sentence(d, score_name, cal_info)))
        blocks.append(_Block("table", _decision_table(d)))
    else:
        blocks.append(_Block("p", f"No decisions: the model has no threshold (score {score_name})."))
    blocks.append(_Block("p", "Ranking quality of the default score, which needs no threshold:"))
    blocks.append(_Block("table", _headline_table(metrics, score_name)))
    blocks.append(_Block("p", _NA_NOTE))
    warnings = _warnings(metrics, y)
    if warnings:
        blocks.append(_Block("list", warnings))
    # ---- what the threshold got wrong
    for key, heading, what in (("missed", "Missed defects", "defective test images the threshold called normal, "
                                "lowest score first"),
                               ("alarms", "False alarms", "normal test images the threshold called anomalous, "
                                "highest score first")):
        if key in figures:
            examples = missed if key == "missed" else false_alarms
            blocks += [_Block("h2", heading)]
            if examples:
                total = d.get("defective", 0) - d.get("caught", 0) if key == "missed" else d.get("false_alarms", 0)
                blocks.append(_Block("p", f"{len(examples)} of {total} {what}."))
            blocks.append(_Block("figure", figures[key]))
    # ---- the details
    blocks.append(_Block("h2", "Details"))
    if isinstance(metrics.get("score_selection"), dict):
        blocks += [_Block("h3", "How the default score was chosen"), *_selection_blocks(metrics["score_selection"])]
    tables = _tables(metrics, score_name)
    for i, table in enumerate(tables):
        heading = "Every score" if i == 0 else table.heading
        blocks += [_Block("h3", heading), _Block("table", table)]
    extra = [(str(k), _format_value(v)) for k, v in metrics.items()
             if k not in METRIC_COLUMNS and k not in _SHOWN_ELSEWHERE]
    if extra:
        blocks += [_Block("h3", "Other entries of metrics.json"), _Block("list", extra)]
    for key in ("roc", "hist", "most", "least"):
        blocks += [_Block("h3", figures[key].heading), _Block("figure", figures[key])]
    blocks += [_Block("h3", "Run"), _Block("table", _Table("", ["", ""], [list(r) for r in info_rows]))]
    blocks += [_Block("h3", "Config"), _Block("pre", config_yaml)]

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MISSED_PNG, ALARMS_PNG):  # sections this run has no list for
        if not any(f.file == name for f in figures.values()):
            (out_dir / name).unlink(missing_ok=True)
    for fig in figures.values():
        path = out_dir / fig.file
        if fig.png is not None:
            atomic_write_bytes(path, fig.png)
        else:
            path.unlink(missing_ok=True)  # a stale picture from an earlier run would contradict the report

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    # printable: a name or path from the file system need not be UTF-8 (e.g. b"caf\xe9"); escaped, not fatal.
    atomic_write_text(md_path, printable(_markdown(title, blocks)))
    atomic_write_text(html_path, printable(_html(title, blocks, score_name)))
    return md_path, html_path
