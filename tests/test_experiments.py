"""Benchmark and ablation studies: tables, shared runs, resume, and parallel runs changing nothing."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import TINY
from scgan.config import config_from_dict, load_config
from scgan.experiments.runs import config_key, data_identity, make_spec, run_key
from scgan.experiments.studies import STUDIES, discover_categories, run_study


def _base(**extra):
    over = {k: v for k, v in TINY.items()}
    over.update({"epochs": 1, **extra})
    return load_config("cpu", overrides=over)


@pytest.mark.unit
def test_config_key_ignores_paths_and_extra_checkpoints():
    a = _base()
    b = _base(checkpoint_every=3)
    b.data.root = "/elsewhere"
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(_base(n_patches=7))


@pytest.mark.unit
def test_settings_added_later_keep_old_run_keys():
    """A setting added later stays out of the key at the value older runs had (their keys stay), and any
    other value is a new run."""
    from scgan.config import ADDED_LATER

    over = ["image_size=64", "epochs=40", "seed=0", "dataset=mvtec", "category=bottle"]
    old = load_config("cpu", overrides=[*over, "output_scale=1.0"])
    d = old.identity()
    for section, key in ADDED_LATER:
        d.get(section, {}).pop(key, None)  # a config written before these settings existed (of its kind)
    from scgan.config import migrate_config

    assert config_key(config_from_dict(migrate_config(d))) == config_key(old)
    assert config_key(load_config("cpu", overrides=over)) != config_key(old)  # the cpu preset's 1.1


@pytest.mark.unit
def test_runtime_settings_are_not_part_of_the_run_key():
    a = _base()
    b = _base(precision="bf16-mixed", channels_last=True, eval_batch_size=3, num_workers=2)
    assert b.runtime != a.runtime and config_key(a) == config_key(b)


@pytest.mark.unit
def test_run_key_follows_the_data_not_only_the_config(tmp_path, demo_root, demo_category):
    cfg = _base(**{"data.root": str(demo_root), "data.category": demo_category})
    copy_root = tmp_path / "copy"
    shutil.copytree(demo_root, copy_root)
    moved = config_from_dict(cfg.to_dict())
    moved.data.root = str(copy_root)
    assert run_key(cfg) != run_key(moved)  # same files, another folder
    assert run_key(cfg) == run_key(config_from_dict(cfg.to_dict()))
    before = data_identity(moved)["files_sha256"]
    next((copy_root / demo_category / "train" / "good").iterdir()).write_bytes(b"other")
    assert data_identity(moved)["files_sha256"] != before  # a file's size changed


@pytest.mark.unit
def test_discover_categories_in_paper_order(demo_root):
    assert discover_categories("mvtec", demo_root) == ["weave", "washer"]
    with pytest.raises(FileNotFoundError):
        discover_categories("mvtec", demo_root / "nope")


@pytest.mark.system
def test_benchmark_table_resume_and_parallel_runs(tmp_path, demo_root, demo_category):
    import torch

    base = _base()
    threads = torch.get_num_threads()
    out = run_study("benchmark", base, dataset="mvtec", root=str(demo_root), categories=[demo_category],
                    seeds=[0, 1], results=tmp_path / "serial", jobs=1, threads=threads + 1, progress=False)
    assert torch.get_num_threads() == threads  # a run's thread count does not leak into the caller
    table = (out / "table.md").read_text()
    assert demo_category in table and "Paper SCGAN" in table and "±" in table
    assert "last epoch" in table and "git commit" in table
    res = json.load(open(f"{json.loads((out / 'summary.json').read_text())['runs']['base'][demo_category][0]}"
                         "/test/metrics.json"))["pixel_metrics_resolution"]
    assert f"Pixel AUROC and AUPRO at {res[0]} x {res[1]} px, the masks' stored resolution." in table
    summary = json.loads((out / "summary.json").read_text())
    run_dirs = summary["runs"]["base"][demo_category]
    assert len(run_dirs) == 2
    first = [json.load(open(f"{r}/test/metrics.json")) for r in run_dirs]
    assert first[0]["scores"] != first[1]["scores"]  # two seeds, two results
    mtimes = [os.stat(f"{r}/test/metrics.json").st_mtime for r in run_dirs]
    # Run again: nothing is redone.
    run_study("benchmark", base, dataset="mvtec", root=str(demo_root), categories=[demo_category], seeds=[0, 1],
              results=tmp_path / "serial", jobs=1, threads=1, progress=False)
    assert [os.stat(f"{r}/test/metrics.json").st_mtime for r in run_dirs] == mtimes
    # Two runs at once, same threads per run: the same numbers.
    par = run_study("benchmark", base, dataset="mvtec", root=str(demo_root), categories=[demo_category],
                    seeds=[0, 1], results=tmp_path / "parallel", jobs=2, threads=threads + 1, progress=False)
    par_dirs = json.loads((par / "summary.json").read_text())["runs"]["base"][demo_category]
    for a, b in zip(run_dirs, par_dirs):
        ma, mb = json.load(open(f"{a}/test/metrics.json")), json.load(open(f"{b}/test/metrics.json"))
        assert ma["scores"] == mb["scores"] and ma["pixel_auroc"] == mb["pixel_auroc"]


@pytest.mark.integration
def test_beta_study_rescores_base_runs_without_training(tmp_path, demo_root, demo_category):
    base = _base()
    spec = make_spec(load_config("cpu", overrides={**{k: v for k, v in TINY.items()}, "epochs": 1,
                                                   "data.root": str(demo_root), "data.category": demo_category}),
                     tmp_path / "runs", 1, "")
    out = run_study("beta", base, dataset="mvtec", root=str(demo_root), categories=[demo_category], seeds=[0],
                    results=tmp_path, jobs=1, threads=1, progress=False)
    assert spec.done()  # the beta study trained exactly the base run, once
    text = (out / "table.md").read_text()
    assert "beta=0.0" in text and "beta=1.0" in text and (out / "beta.png").stat().st_size > 0


@pytest.mark.unit
def test_studies_cover_the_paper():
    assert [v.name for v in STUDIES["n_patches"]] == ["N=10", "N=30", "N=50", "N=100"]
    struc = {v.name: v.overrides for v in STUDIES["structure"]}
    assert struc["struc1"] == {"model.attention": False, "loss.w_ssim": 0.0} and struc["struc4"] == {}
    with pytest.raises(ValueError, match="unknown study"):
        run_study("nope", _base(), dataset="mvtec", root=".", categories=["x"], seeds=[0], results=None)


@pytest.mark.unit
def test_an_ablation_of_a_feature_model_is_refused_naming_the_preset(tmp_path):
    from scgan.experiments.studies import run_study

    with pytest.raises(ValueError, match="--preset cpu"):
        run_study("n_patches", load_config("default"), dataset="mvtec", root=str(tmp_path), categories=["bottle"],
                  seeds=[0], results=tmp_path)
