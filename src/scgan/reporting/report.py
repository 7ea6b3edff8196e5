"""The test report: report.md and a self-contained report.html.

It leads with what a user acts on: the decisions at the model's threshold (catch rate per defect type, false-alarm
rate) beside AUROC, pixel AUROC and AUPRO; then the defects it missed and its false alarms (image, heat map, mask);
then the details: how the score was chosen, every score's metrics, curves, the most and least anomalous images,
the run, and the config last.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from scgan.calibration.stats import normal_images
from scgan.reporting.document import (
    Block,
    BulletList,
    CodeBlock,
    FigureBlock,
    Heading,
    Paragraph,
    Table,
    format_metric,
    format_value,
    render_html,
    render_markdown,
    yaml_text,
)
from scgan.reporting.figures import ReportExample, examples_png, hist_png, roc_png
from scgan.utils.atomic import atomic_write_bytes, atomic_write_text
from scgan.utils.names import printable
from scgan.utils.tables import is_missing, pct

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
                    "calibration_warning", "threshold_normalized", "pixel_auroc_by_defect"}
# Headings of the per-score sub-tables (a dict under each score's entry); other keys are used as they are.
_SUBTABLE_TITLES = {"at_threshold": "Decisions at the validation threshold"}
ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG = "roc.png", "score_hist.png", "examples_most.png", "examples_least.png"
MISSED_PNG, ALARMS_PNG = "missed_defects.png", "false_alarms.png"
REPORT_FILES = ("report.md", "report.html", ROC_PNG, HIST_PNG, MOST_PNG, LEAST_PNG,  # all that write_report writes
                MISSED_PNG, ALARMS_PNG)
_NA_NOTE = "(%) = percent; n/a = undefined for this test set (e.g. a single class) or not computed."
# The sections of the threshold's mistakes: figure key, file, heading, what its examples are, note when there are none.
_MISTAKES = (
    ("missed", MISSED_PNG, "Missed defects", "defective test images the threshold called normal, lowest score first",
     "None: the threshold caught every defective image."),
    ("alarms", ALARMS_PNG, "False alarms", "normal test images the threshold called anomalous, highest score first",
     "None: no normal image was called anomalous."),
)


# ---- tables and sentences from metrics.json -------------------------------------------------------------------
def _metric_rows(metrics: dict, score_name: str) -> list[tuple[str, dict]]:
    """(score name, its metrics) per row: metrics["scores"], led by the top-level metrics if ``score_name`` lacks
    a row."""
    per_score = metrics.get("scores") if isinstance(metrics.get("scores"), dict) else {}
    rows = [(str(n), dict(v)) for n, v in per_score.items() if isinstance(v, dict)]
    top = {k: metrics[k] for k in METRIC_COLUMNS if k in metrics}
    if top and score_name not in (n for n, _ in rows):
        rows.insert(0, (score_name, top))
    return rows


def _score_table(rows: list[tuple[str, dict]], score_name: str) -> Table:
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
            else format_value(vals.get(k))
            for k in keys
        ]
        body.append([label, *cells])
    return Table(header, body, tuple("default" if name == score_name else "" for name, _ in rows))


def _score_tables(metrics: dict, score_name: str) -> list[tuple[str, Table]]:
    """(heading, table): every score's metrics, then one per dict-valued entry of the scores (``at_threshold``)."""
    rows = _metric_rows(metrics, score_name)
    tables = [("Every score", _score_table(rows, score_name))]
    nested = dict.fromkeys(k for _, vals in rows for k, v in vals.items() if isinstance(v, dict))
    for key in nested:
        sub = [(name, vals[key]) for name, vals in rows if isinstance(vals.get(key), dict)]
        tables.append((_SUBTABLE_TITLES.get(key, key), _score_table(sub, score_name)))
    return tables


def _threshold(metrics: dict, score_name: str) -> float | None:
    """The decision threshold from metrics["threshold"]: a number, or a dict with "value" or the score's name."""
    t = metrics.get("threshold")
    if isinstance(t, dict):
        t = t.get("value", t.get(score_name))
    if isinstance(t, numbers.Real) and math.isfinite(float(t)):
        return float(t)
    return None


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


def _decision_sentence(d: dict, score_name: str) -> str:
    """The decisions at the threshold in one sentence: how many defects caught, how many false alarms."""
    cal_info = ""
    if d.get("quantile") is not None and d.get("calibration_images") is not None:
        normal = normal_images(d["calibration_images"], d.get("crossfit_images", 0))
        cal_info = f": the {d['quantile']:g} quantile of {normal}"
    norm = "" if d.get("threshold_normalized") is None else f", normalised {d['threshold_normalized']:.3g}"
    return (f"At its own threshold ({score_name} > {d['threshold']:.4g}{norm}{cal_info}) the model catches "
            f"{d['caught']} of {d['defective']} defective test images ({pct(d['catch_rate'], unit='%')}) and raises "
            f"false alarms on {d['false_alarms']} of {d['normal']} normal ones "
            f"({pct(d['false_alarm_rate'], unit='%')}).")


def _decision_table(d: dict) -> Table:
    """Per defect type: images, how many the threshold calls anomalous, and the rate; the normal images last."""
    by_defect = d.get("by_defect", {})
    body = [["all defective images (catch rate)", str(d["defective"]), str(d["caught"]), pct(d["catch_rate"])]]
    body += [[f"defect: {name}", str(v["images"]), str(v["caught"]), pct(v["catch_rate"])]
             for name, v in by_defect.items()]
    body.append(["normal images (false-alarm rate)", str(d["normal"]), str(d["false_alarms"]),
                 pct(d["false_alarm_rate"])])
    return Table(["test images", "images", "called anomalous", "rate (%)"], body,
                 ("total", *([""] * len(by_defect)), "total"))


def _headline_table(metrics: dict, score_name: str) -> Table:
    """The default score's threshold-free metrics in one row."""
    keys = [k for k in METRIC_COLUMNS if k in metrics]
    return Table(["score", *(f"{METRIC_COLUMNS[k]} (%)" for k in keys)],
                 [[f"{score_name} (default)", *(format_metric(metrics.get(k)) for k in keys)]], ("default",))


def _selection_blocks(sel: dict) -> list[Block]:
    """score_selection as a sentence and a table: each score's separation AUROC (mean, and per strength)."""
    blocks: list[Block] = [Paragraph(f"Rule: {sel.get('rule', 'n/a')}.")]
    mean = sel.get("separation_auroc") or {}
    by_strength = sel.get("separation_auroc_by_strength") or {}
    header = ["score", "separation AUROC (%)" + (", mean" if by_strength else "")]
    header += [f"at strength {a} (%)" for a in by_strength]
    body = []
    for name, v in mean.items():
        chosen = " (selected)" if name == sel.get("selected") else ""
        body.append([f"{name}{chosen}", pct(v), *(pct(row.get(name)) for row in by_strength.values())])
    if body:
        blocks.append(Table(header, body))
    return blocks


def _run_table(info: dict, score_name: str, labels: np.ndarray) -> Table:
    """The run's details (``info``), the default score and the test images, one row each."""
    rows = [[str(k), format_value(v)] for k, v in info.items()]
    rows += [["default score", score_name],
             ["test images", f"{labels.size} ({int((~labels).sum())} normal, {int(labels.sum())} anomalous)"]]
    return Table(["", ""], rows)


# ---- the figures ----------------------------------------------------------------------------------------------
def _examples_figure(examples: list[ReportExample], file: str, heading: str,
                     heat_ticks: list[tuple[float, str]] | None, note: str) -> FigureBlock:
    """The example grid as a figure, or only the note (a default one if empty) without examples."""
    png = examples_png(examples, heat_ticks)
    return FigureBlock(file, heading, png, note or ("" if examples else "No examples given."))


def _figures(scores: np.ndarray, labels: np.ndarray, metrics: dict, score_name: str,
             examples: dict[str, list[ReportExample] | None], heat_ticks: list[tuple[float, str]] | None,
             legend: str) -> dict[str, FigureBlock]:
    """Every figure by key: roc, hist, most, least, and missed / alarms where ``examples`` has a list for them."""
    roc = roc_png(scores, labels, score_name)
    hist = hist_png(scores, labels, score_name, _threshold(metrics, score_name))
    figures = {
        "roc": FigureBlock(ROC_PNG, "ROC curve", roc,
                           "" if roc is not None else "ROC curve not drawn: the test labels hold only one class."),
        "hist": FigureBlock(HIST_PNG, "Score histogram", hist,
                            "" if hist is not None else "Score histogram not drawn: no test scores."),
        "most": _examples_figure(examples["most"], MOST_PNG, "Most anomalous test images", heat_ticks, legend),
        "least": _examples_figure(examples["least"], LEAST_PNG, "Least anomalous test images", heat_ticks, legend),
    }
    for key, file, heading, _, none_note in _MISTAKES:
        found = examples[key]
        if found is not None:
            figures[key] = _examples_figure(found, file, heading, heat_ticks, legend if found else none_note)
    return figures


# ---- the sections ---------------------------------------------------------------------------------------------
def _results_blocks(metrics: dict, score_name: str, labels: np.ndarray) -> list[Block]:
    """The decisions at the threshold, the threshold-free metrics and the caveats."""
    blocks: list[Block] = [Heading(2, "Results")]
    d = metrics.get("at_threshold")
    if isinstance(d, dict) and "caught" in d:
        blocks += [Paragraph(_decision_sentence(d, score_name), "lead"), _decision_table(d)]
    else:
        blocks.append(Paragraph(f"No decisions: the model has no threshold (score {score_name}).", "lead"))
    blocks += [Paragraph("Ranking quality of the default score, which needs no threshold:"),
               _headline_table(metrics, score_name), Paragraph(_NA_NOTE, "note")]
    by_defect = metrics.get("pixel_auroc_by_defect") or {}
    if len(by_defect) > 1:
        blocks += [Paragraph("Where the maps light up, per defect type (its images with every normal image): a type "
                             "that holds most of the defect pixels sets the pixel AUROC."),
                   Table(["defect", "images", "share of the defect pixels (%)", "pixel AUROC (%)"],
                         [[name, str(v["images"]), pct(v["pixel_share"]), pct(v["pixel_auroc"])]
                          for name, v in by_defect.items()])]
    warnings = _warnings(metrics, labels)
    if warnings:
        blocks.append(BulletList(warnings))
    return blocks


def _mistake_blocks(metrics: dict, figures: dict[str, FigureBlock],
                    examples: dict[str, list[ReportExample] | None]) -> list[Block]:
    """What the threshold got wrong: the missed defects and the false alarms, where their lists are known."""
    d = metrics.get("at_threshold")
    blocks: list[Block] = []
    for key, _, heading, what, _ in _MISTAKES:
        if key not in figures:
            continue
        blocks.append(Heading(2, heading))
        if examples[key]:
            total = d.get("defective", 0) - d.get("caught", 0) if key == "missed" else d.get("false_alarms", 0)
            blocks.append(Paragraph(f"{len(examples[key])} of {total} {what}."))
        blocks.append(figures[key])
    return blocks


def _details_blocks(metrics: dict, score_name: str, figures: dict[str, FigureBlock], run: Table,
                    config: dict) -> list[Block]:
    """How the score was chosen, every score's tables, other entries, the figures, the run and the config."""
    blocks: list[Block] = [Heading(2, "Details")]
    if isinstance(metrics.get("score_selection"), dict):
        blocks += [Heading(3, "How the default score was chosen"), *_selection_blocks(metrics["score_selection"])]
    for heading, table in _score_tables(metrics, score_name):
        blocks += [Heading(3, heading), table]
    extra = [(str(k), format_value(v)) for k, v in metrics.items()
             if k not in METRIC_COLUMNS and k not in _SHOWN_ELSEWHERE]
    if extra:
        blocks += [Heading(3, "Other entries of metrics.json"), BulletList(extra)]
    for key in ("roc", "hist", "most", "least"):
        blocks += [Heading(3, figures[key].heading), figures[key]]
    blocks += [Heading(3, "Run"), run, Heading(3, "Config"), CodeBlock(yaml_text(config))]
    return blocks


# ---- the writer -----------------------------------------------------------------------------------------------
def _checked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N,) scores as float64 and labels as bool; raise if their lengths differ or a score is not finite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have one length, got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model output before writing a report")
    return s, y


def _write_pngs(out_dir: Path, figures: dict[str, FigureBlock]) -> None:
    """Write each drawn figure; remove the files of those not drawn, and of sections this run has no list for."""
    for name in (MISSED_PNG, ALARMS_PNG):
        if not any(f.file == name for f in figures.values()):
            (out_dir / name).unlink(missing_ok=True)
    for fig in figures.values():
        path = out_dir / fig.file
        if fig.png is not None:
            atomic_write_bytes(path, fig.png)
        else:
            path.unlink(missing_ok=True)  # a stale picture from an earlier run would contradict the report


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
    s, y = _checked(scores, labels)
    examples = {"most": examples_top, "least": examples_bottom, "missed": missed, "alarms": false_alarms}
    legend = f"Heat-map colours: {heat_legend}." if heat_legend else ""
    figures = _figures(s, y, metrics, score_name, examples, heat_ticks, legend)
    blocks = [*_results_blocks(metrics, score_name, y), *_mistake_blocks(metrics, figures, examples),
              *_details_blocks(metrics, score_name, figures, _run_table(dict(info or {}), score_name, y), config)]

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_pngs(out_dir, figures)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    # printable: a name or path from the file system need not be UTF-8 (e.g. b"caf\xe9"); escaped, not fatal.
    atomic_write_text(md_path, printable(render_markdown(title, blocks)))
    atomic_write_text(html_path, printable(render_html(title, blocks)))
    return md_path, html_path
