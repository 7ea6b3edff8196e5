"""One number and table format for every table scgan and its benchmark scripts write."""
from __future__ import annotations

import csv
import importlib.util
import io
import sys

import numpy as np
import pytest

from conftest import REPO
from scgan.utils.tables import csv_text, decision_label, fmt_mean_std, is_missing, markdown_table, num, pct

pytestmark = pytest.mark.unit


def test_numbers_and_percentages():
    assert [is_missing(v) for v in (None, float("nan"), float("inf"), 0.0, np.float32(1))] == [True] * 3 + [False] * 2
    assert num(93.25) == "93.2" and num(2.5, 0) == "2" and num(0.1234, 3) == "0.123"
    assert num(None) == "n/a" and num(float("nan"), missing="-") == "-"
    assert num(4.5, sign=True) == "+4.5" and num(-4.5, sign=True) == "-4.5"
    assert pct(0.97349) == "97.3" and pct(0.97349, unit="%") == "97.3%" and pct(0.111, sign=True, unit="%") == "+11.1%"
    assert pct(np.float32(0.5), 0) == "50" and pct(None) == "n/a" and pct(float("nan"), missing="-") == "-"


def test_mean_and_sample_std_over_seeds():
    assert fmt_mean_std([0.90, 0.92, 0.94]) == "92.0 ± 2.0"  # std with ddof = 1: sqrt(0.0008 / 2) = 0.02
    assert fmt_mean_std([0.9]) == "90.0"
    assert fmt_mean_std([0.9, None, float("nan")]) == "90.0"  # undefined seeds are left out
    assert fmt_mean_std([]) == "n/a" and fmt_mean_std([None]) == "n/a"
    assert fmt_mean_std([93.0, 95.0], scale=1.0) == "94.0 ± 1.4"


def test_markdown_table_escapes_cells_and_keeps_empty_headers_thin():
    table = markdown_table(["", ""], [["a|b", "line\nbreak"], ["x", ""]])
    assert table.splitlines() == ["| | |", "|---|---|", "| a\\|b | line break |", "| x | |"]
    assert markdown_table(["A", "B"], []) == "| A | B |\n|---|---|"


def test_csv_cells_numbers_and_formulas():
    text = csv_text(["path", "label", "score", "norm", "decision"],
                    [["=cmd|' /C calc'!A0", 1, np.float32(0.123456789), None, decision_label(True)],
                     ["/data/a.png", np.int64(0), 1e-9, 2.0, decision_label(False)]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["path", "label", "score", "norm", "decision"]
    assert rows[1] == ["'=cmd|' /C calc'!A0", "1", "0.123457", "", "anomalous"]
    assert rows[2] == ["/data/a.png", "0", "1e-09", "2", "normal"]
    assert decision_label(None) == ""


SCRIPTS = {p.stem: p for folder in ("benchmarks", "studies", "scripts") for p in (REPO / folder).rglob("*.py")}


def _load_script(name: str):
    path = SCRIPTS[name]
    sys.path.insert(0, str(path.parent))  # a study's scripts import each other
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_study_and_figure_scripts_import(name):
    """The scripts are not run by the suite; their imports at least follow the package's layout."""
    _load_script(name)


def test_benchmark_tables_use_the_shared_format():
    import argparse

    speed = _load_script("bench_speed")
    args = argparse.Namespace(base_channels=8, max_channels=32, batch=4, score_batch=4, sizes=[32])
    rows = [{"size": 32, "attention": True, "train": {"img_per_s": 30.123, "peak_rss_gb": 1.234, "flop_per_img": 4e9,
                                                      "augment_share": 0.0512, "data_share": 0.1, "step_s": 0.5},
             "score": {"error": "boom"}},
            {"size": 32, "attention": False, "train": {"img_per_s": 33.0, "step_s": 0.45, "flop_per_img": 3e9}}]
    speed.derive(rows, 250.0, args)
    lines = speed.speed_table(rows, args).splitlines()
    assert lines[1] == "|" + "---|" * 12
    assert lines[2] == "| 32 | on | 30.12 | - | 1.23 | - | 4.00 | 120 (48%) | - | 5.1 | 10.0 | +11.1% |"
    assert lines[3] == "| 32 | off | 33.00 | - | - | - | 3.00 | 99 (40%) | - | - | - | - |"
    assert "score at S=32 MS-CAM on failed:" in lines[5]  # after the table, not inside it

    ttq = _load_script("time_to_quality")
    from scgan.config import load_config

    names = ("as", "map_max")
    row = {"epochs_trained": 40, "reported_model": True, "cpu_min": 3.04, "wall_min": 2.0, "pixel_auroc": None,
           "image_auroc": dict.fromkeys(names, 0.9321), "default_score": "map_max"}
    text = ttq.markdown([row], {"threads": 2, "total_cpu_s": 182.0, "total_wall_s": 120.0}, load_config("cpu"))
    assert "| 40 (reported) | 3.0 | 2.0 | 0.932 | 0.932 | map_max | - | - |" in text


def test_table_6_shows_the_papers_group_averages_on_the_average_rows():
    from scgan.experiments.studies import STUDIES, StudyResult, ablation_table

    def m(v):
        return {"scores": {"as": {"image_auroc": v}, "map_max": {"image_auroc": v}}}

    variants = STUDIES["augmentation"]
    res = StudyResult("augmentation", variants, ["carpet", "bottle", "metal_nut"], [0],
                      {v.name: {"carpet": [m(0.8)], "bottle": [m(0.9)], "metal_nut": [m(0.7)]} for v in variants}, {})
    _, rows = ablation_table("mvtec", res)
    header = rows[0]
    col = header.index("copypaste paper (its group average)")
    by_label = {(r[0], r[1]): r for r in rows[1:]}
    assert by_label[("Texture", "carpet")][col] == "n/a"
    assert by_label[("Object", "**Average**")][col] == "94.0"  # the paper's Table 6, objects, CopyPaste
    assert by_label[("All", "**Average**")][col] == "92.6"
    assert "none paper (its group average)" not in header  # the paper does not publish 'none'


def test_study_tables_show_mean_and_std_over_seeds():
    from scgan.experiments.studies import StudyResult, Variant, benchmark_table

    def m(v):
        return {"image_auroc": v, "pixel_auroc": None, "aupro": v / 2,
                "scores": {"as": {"image_auroc": v - 0.1}, "map_max": {"image_auroc": v}}}

    res = StudyResult("benchmark", [Variant("base")], ["bottle"], [0, 1],
                      {"base": {"bottle": [m(0.90), m(0.94)]}}, {"base": {"bottle": ["a", "b"]}})
    md, rows = benchmark_table("mvtec", res)
    assert md.splitlines()[2] == ("| Object | bottle | 98.3 | 79.4 | 82.0 ± 2.8 | 92.0 ± 2.8 | 92.0 ± 2.8 | n/a | "
                                  "46.0 ± 1.4 |")
    assert rows[1][4] == "82.0 ± 2.8" and md.endswith("\n")


def test_detection_table_reads_the_runs_and_counts_autos_matches(tmp_path):
    """Table 1 with the head: means over seeds, the bars, and how often auto's pick was the best test score."""
    import json

    dt = _load_script("detection_table")

    def curve(scores, default, cpu_s):
        row = {"reported_model": True, "image_auroc": scores, "default_score": default, "pixel_auroc": 0.93,
               "aupro": 0.8, "scoring_cpu_s": 6.0}
        return {"rows": [{**row, "reported_model": False}, row], "cost": {"total_cpu_s": cpu_s}, "threads": 1}

    for seed, (seg, ssim) in enumerate([(0.99, 0.97), (0.97, 0.98)]):
        d = tmp_path / "results" / "detection_default" / f"bottle_seed{seed}"
        d.mkdir(parents=True)
        (d / "curve.json").write_text(json.dumps(curve({"as": 0.8, "seg_max": seg, "ssim_max": ssim}, "seg_max",
                                                       1200.0)))
    m = tmp_path / "rescored" / "bottle_seed0"
    m.mkdir(parents=True)
    scores = {"as": {"image_auroc": 0.79}, "map_max": {"image_auroc": 0.93}}
    (m / "metrics.json").write_text(json.dumps({"scores": scores, "default_score": "map_max", "pixel_auroc": 0.87,
                                                "aupro": 0.63}))
    data = dt.collect(tmp_path / "results", tmp_path / "rescored")
    assert [r["seed"] for r in data["head"]["bottle"]] == [0, 1] and len(data["headless"]["bottle"]) == 1
    assert data["head"]["bottle"][0]["cpu_min"] == pytest.approx(20.1)
    text = dt.markdown(data)
    assert "| bottle | 98.3 | 1 / 2 | 79.0 | 93.0 | 93.0 | 87.0 | 63.0 | 98.0 ± 1.4 | 98.0 ± 1.4 |" in text
    assert "image AUROC 99.0, 97.0 against >= 98.3: met by 1 of 2" in text
    assert "CPU minutes 20.1, 20.1 against <= 30.0: met by 2 of 2" in text
    assert "2 of 3 runs matched" in text  # seed 1's pick (seg_max 97.0) was not the best (ssim_max 98.0)


def test_detection_table_uses_the_refitted_pick_where_reselect_made_one(tmp_path):
    """A reselect.py output changes the head runs' pick under today's rule (bars and matches), not the
    as-trained column."""
    import json

    dt = _load_script("detection_table")
    row = {"reported_model": True, "default_score": "map_max", "pixel_auroc": 0.9, "aupro": 0.7}
    for seed, seg in enumerate([0.91, 0.85]):
        d = tmp_path / "results" / "detection_default" / f"metal_nut_seed{seed}"
        d.mkdir(parents=True)
        curve = {"rows": [{**row, "image_auroc": {"as": 0.5, "map_max": 0.73, "seg_max": seg}}],
                 "cost": {"total_cpu_s": 900.0}, "threads": 1}
        (d / "curve.json").write_text(json.dumps(curve))
    sel = tmp_path / "reselect.json"
    sel.write_text(json.dumps({"curves_folder": "results/detection_default",
                               "runs": [{"run": "metal_nut_seed0", "new": {"selected": "seg_max"}}]}))
    other = dt.collect(tmp_path / "results", tmp_path / "none", head_runs="detection_x", reselect=sel)
    assert other == {"head": {}, "headless": {}}  # no runs there, and picks made for other runs are not used
    data = dt.collect(tmp_path / "results", tmp_path / "none", reselect=sel)
    assert [dt.pick(r) for r in data["head"]["metal_nut"]] == ["seg_max", "map_max"]
    text = dt.markdown(data)
    assert "| 73.0 ± 0.0 | 82.0 ± 12.7 | 88.0 ± 4.2 |" in text  # as trained, today's rule, seg_max
    assert "image AUROC 91.0, 73.0 against >= 90.1: met by 1 of 2" in text
    assert "1 of 2 runs matched" in text and "for the 1 head run(s) trained before that rule" in text
