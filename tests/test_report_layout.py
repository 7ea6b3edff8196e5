"""The test report leads with the results a user acts on, then the missed defects and false alarms, then the
details (score selection as a table, run and config last); example titles never overlap."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_the_report_leads_with_results_then_misses_and_false_alarms_then_details(tested):
    _, out = tested
    doc = (out / "report.md").read_text()
    headings = re.findall(r"^(#{2,3}) (.+)$", doc, re.M)
    top = [h for level, h in headings if level == "##"]
    assert top == ["Results", "Missed defects", "False alarms", "Details"]
    assert [h for level, h in headings if level == "###"][-2:] == ["Run", "Config"]  # run details and config last
    results = doc.split("## Missed defects")[0]
    m = json.loads((out / "metrics.json").read_text())
    d = m["at_threshold"]
    assert f"catches {d['caught']} of {d['defective']} defective test images" in results
    assert "| all defective images (catch rate) |" in results and "| normal images (false-alarm rate) |" in results
    for name in d["by_defect"]:
        assert f"| defect: {name} |" in results
    assert "| score | image AUROC (%) | pixel AUROC (%) | AUPRO (%) | F1-max (%) |" in results
    assert "command" not in results and "```yaml" not in results  # run details and config are not first
    # The misses and false alarms: image, overlay and mask, or a sentence saying there are none.
    n_missed, n_alarms = d["defective"] - d["caught"], d["false_alarms"]
    assert ((out / "missed_defects.png").is_file()) == (n_missed > 0)
    assert ((out / "false_alarms.png").is_file()) == (n_alarms > 0)
    assert ("None: the threshold caught every defective image." in doc) == (n_missed == 0)
    assert ("None: no normal image was called anomalous." in doc) == (n_alarms == 0)
    # The score selection is a table, not a dump of nested values.
    details = doc.split("## Details")[1]
    assert "separation_auroc:" not in doc and "rule: auto" not in doc
    assert "| score | separation AUROC (%)" in details and "(selected) |" in details
    page = (out / "report.html").read_text()
    assert page.index("<h2>Results</h2>") < page.index("<h2>Missed defects</h2>") < page.index("<h2>Details</h2>")
    assert page.index("<h2>Details</h2>") < page.index("<h3>Run</h3>") < page.index("<h3>Config</h3>")


@pytest.mark.unit
def test_example_titles_do_not_overlap(monkeypatch):
    from scgan.reporting import figures as report_figures

    figures = []
    monkeypatch.setattr(report_figures, "_png", lambda fig, dpi=100: figures.append(fig) or b"png")
    rng = np.random.default_rng(0)
    mask = np.zeros((300, 200), bool)
    mask[50:90, 60:120] = True
    examples = [report_figures.ReportExample(f"very_long_defect_type_name/{i:03d}_with_a_long_file_name.png",
                                             rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), rng.random((30, 20)),
                                             1.234 * i, i % 2, mask if i % 2 else None, "normal") for i in range(4)]
    report_figures.examples_png(examples)
    fig = figures[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = []
    for sub in fig.subfigs:
        boxes.append(sub._suptitle.get_window_extent(renderer))
        boxes += [ax.title.get_window_extent(renderer) for ax in sub.axes if ax.get_title()]
        boxes += [ax.get_window_extent(renderer) for ax in sub.axes if not getattr(ax, "_colorbar", None)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
