"""``scgan train --engine ray``: a local Ray of 2 worker processes extracts the training features of a PatchCore
detector and the bank is the local fit's, bit for bit (same images in the same order into the same merge-reduce;
the local fit on one thread as each actor runs, since the convolutions round differently on more; the same images
mirrored where the bank takes them mirrored), an unreadable
image skipped and counted as locally, a worker that dies halfway losing nothing; an SCGAN, a missing cluster and a
missing Ray are refused in one line before the output folder is touched."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

# Small enough to fit in seconds; max_patches far below the 24 images' patches, so that many merges run and the
# order the images come in decides the bank.
SMALL = {"patchcore.resolution": 64, "patchcore.bank_size": 96, "patchcore.max_patches": 200, "eval_batch_size": 8}


@pytest.fixture
def data_with_a_bad_image(tmp_path, demo_root, demo_category):
    """The demo category with one unreadable file among its training images: the data section's overrides."""
    root = tmp_path / "data"
    shutil.copytree(demo_root / demo_category, root / demo_category)
    (root / demo_category / "train" / "good" / "000_unreadable.png").write_bytes(b"not an image")
    return {"data.root": str(root), "data.category": demo_category, "data.skip_bad_images": True}


def _memory(model_path):
    from scgan.artifacts.model_file import load_model

    return load_model(model_path).parts["memory"]


def _same_bank(a, b) -> None:
    assert a.bank.shape == b.bank.shape
    assert torch.equal(a.bank, b.bank)
    assert torch.equal(a.scale, b.scale)


@pytest.mark.system
@pytest.mark.parametrize("flips", ["none", "always"])  # "always": the workers mirror the images the local fit does
def test_a_ray_fit_chooses_the_local_fits_bank_and_skips_an_unreadable_image_as_it(tmp_path, data_with_a_bad_image,
                                                                                   local_ray, capsys, one_thread,
                                                                                   flips):
    from scgan.cli import main
    from scgan.config import load_config
    from scgan.training.fit import train

    settings = {**SMALL, "patchcore.flips": flips}
    cfg = load_config("default", overrides={**settings, **data_with_a_bad_image})
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        local = train(cfg, tmp_path / "local", progress=False)
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        rc = main(["train", "--root", data_with_a_bad_image["data.root"], "--category",
                   data_with_a_bad_image["data.category"], "--output", str(tmp_path / "ray"), "--engine", "ray",
                   "--workers", "2", "data.skip_bad_images=true", *(f"{k}={v}" for k, v in settings.items())])
    assert rc == 0
    err = capsys.readouterr().err
    assert re.search(r"features \(ray\): (\d+)/\1 images", err) and "s left" in err  # progress, with time left
    _same_bank(_memory(local.model_path), _memory(tmp_path / "ray" / "model.pt"))
    from scgan.artifacts.model_file import load_model

    thresholds = [{name: s.threshold for name, s in load_model(path).calibration.scores.items()}
                  for path in (local.model_path, tmp_path / "ray" / "model.pt")]
    assert thresholds[0] == thresholds[1] and thresholds[0]


@pytest.mark.system
def test_a_worker_that_dies_halfway_changes_nothing_in_the_bank(tmp_path, demo_root, demo_category, local_ray,
                                                                one_thread):
    import functools

    from scgan.config import load_config
    from scgan.training.cluster import ExtractFeatures, RayEngine, ray_stream_bank
    from scgan.training.fit import train
    from scgan.training.patchcore import fit_patchcore

    died = tmp_path / "died"

    class Dying(ExtractFeatures):
        def __call__(self, batch):
            if not died.exists():
                died.touch()
                os._exit(1)  # the worker process dies, its batch unfinished
            return super().__call__(batch)

    cfg = load_config("default", overrides={**SMALL, "data.root": str(demo_root), "data.category": demo_category})
    local = train(cfg, tmp_path / "local", progress=False)
    (tmp_path / "ray").mkdir()
    remote = fit_patchcore(cfg, tmp_path / "ray", progress=False,
                           bank_from=functools.partial(ray_stream_bank, engine=RayEngine(), actor=Dying))
    assert died.exists()  # a worker did die
    _same_bank(_memory(local.model_path), _memory(remote.model_path))


@pytest.mark.unit
def test_an_scgan_is_refused_on_ray_in_one_line_naming_ddp(tmp_path, demo_root, demo_category, capsys):
    from scgan.cli import main

    rc = main(["train", "--preset", "cpu", "--root", str(demo_root), "--category", demo_category, "--output",
               str(tmp_path / "o"), "--engine", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "not fitted on a Ray cluster" in err[0] and "Lightning DDP" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.unit
def test_no_cluster_at_the_address_is_one_line_and_the_run_there_stays(tmp_path, demo_root, demo_category, capsys):
    pytest.importorskip("ray")
    from scgan.cli import main

    out = tmp_path / "o"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier run's model")
    rc = main(["train", "--root", str(demo_root), "--category", demo_category, "--output", str(out), "--overwrite",
               "--engine", "ray", "--address", "127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err[0]
    assert (out / "model.pt").read_bytes() == b"an earlier run's model"


@pytest.mark.unit
def test_without_ray_the_train_engine_names_the_extra_in_one_line(tmp_path, demo_root, demo_category, capsys,
                                                                  monkeypatch):
    import sys

    from scgan.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as where it is not installed
    rc = main(["train", "--root", str(demo_root), "--category", demo_category, "--output", str(tmp_path / "o"),
               "--engine", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "pip install 'scgan[cluster]'" in err[0]
    assert not (tmp_path / "o").exists()
