"""Every number a user types is bounded: batch sizes, workers, image sides and tiles are refused out of range in one
line (command line, YAML config, Python API alike), and tiled scoring states its count, refuses an image of too many
tiles before scoring any, and says how long it has left when it runs long."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shifted_seed
from scgan.cli import main
from scgan.inference.detector import Detector
from scgan.inference.predict import run_predict
from scgan.inference.tiling import TileLimitError, TileProgress, check_tile_count, tile_count, tile_origins
from scgan.utils.limits import BATCH_SIZE, MAX_SIDE_RANGE, MAX_TILES, Range

pytestmark = pytest.mark.unit


def _detector(calls: list[tuple[int, ...]] | None = None, **kwargs) -> Detector:
    """A Detector of a 32 px square model that scores everything 0 (records each batch's shape in ``calls``)."""
    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if calls is not None:
            calls.append(x.shape)
        return np.zeros((len(x), 1), np.float32), np.zeros((len(x), *x.shape[2:]), np.float32)

    return Detector(score, spec=32, score_names=("s",), default_score="s", calibration=None, backend="test", **kwargs)


def test_a_range_names_the_value_and_what_is_allowed():
    r = Range(1, 8, "why")
    assert r.check("n", 8) == 8 and 3 in r and 0 not in r and 9 not in r and 2.0 not in r and True not in r
    with pytest.raises(ValueError, match=r"^n must be a whole number from 1 to 8 \(why\), got 9$"):
        r.check("n", 9)


@pytest.mark.parametrize("kwargs, words", [
    ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1024"),
    ({"batch_size": 100_000}, "batch_size must be a whole number from 1 to 1024"),
    ({"max_side": 8}, f"max_side must be a whole number from {MAX_SIDE_RANGE.low} to {MAX_SIDE_RANGE.high}"),
    ({"max_side": 10**6}, "max_side must be a whole number from"),
    ({"tile": 15}, "tile must be at least 16 pixels \\(half the model's working resolution of 32"),
    ({"tile": 0}, "tile must be at least 16 pixels"),
])
def test_the_detector_refuses_numbers_out_of_range(kwargs, words):
    with pytest.raises(ValueError, match=words):
        _detector(**kwargs)
    assert _detector(batch_size=BATCH_SIZE.high, max_side=MAX_SIDE_RANGE.low, tile=16).tile == 16


@pytest.mark.parametrize("setting, words", [
    ("eval_batch_size=0", "eval_batch_size must be a whole number from 1 to 1024"),
    ("eval_batch_size=5000", "eval_batch_size must be a whole number from 1 to 1024"),
    ("num_workers=1000", "num_workers must be a whole number from 0 to 64"),
    ("patchcore.resolution=16", "patchcore.resolution must be a whole number from 32 to 4096"),
    ("patchcore.resolution=100000", "patchcore.resolution must be a whole number from 32 to 4096"),
])
def test_the_config_refuses_numbers_out_of_range_in_one_line(setting, words, capsys, tmp_path):
    yaml = tmp_path / "c.yaml"
    key, value = setting.split("=")
    yaml.write_text(f"{key}: {value}\n")
    for argv in (["config", setting], ["config", "--config", str(yaml)]):  # the command line and a YAML file
        capsys.readouterr()
        assert main(argv) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("scgan config: error: ") and words in lines[0], lines


@pytest.mark.parametrize("setting, words", [("batch_size=1", "batch_size must be a whole number from 2 to 1024"),
                                            ("image_size=8192", "image_size must be a whole number from 32 to 4096")])
def test_the_scgan_config_bounds_its_batch_and_side(setting, words, capsys):
    assert main(["config", "--preset", "cpu", setting]) == 1
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("h, w, tile", [(1, 1, 32), (32, 32, 32), (33, 32, 32), (120, 50, 64), (6000, 8000, 256),
                                        (777, 1234, 40)])
def test_the_tile_count_is_the_number_of_tiles_laid(h, w, tile):
    assert tile_count(h, w, tile) == len(tile_origins(h, tile)) * len(tile_origins(w, tile))


def test_an_image_of_too_many_tiles_is_refused_stating_the_count():
    assert check_tile_count(6000, 8000, 256) == 1302  # a 48-megapixel image in 256 px tiles: allowed
    with pytest.raises(TileLimitError) as e:
        check_tile_count(6000, 8000, 32)
    n = tile_count(6000, 8000, 32)
    message = str(e.value)
    assert f"{n:,} tiles of 32 pixels" in message and f"{MAX_TILES:,} allowed" in message and "8000 x 6000" in message
    least = int(message.rsplit("at least ", 1)[1].split()[0])  # the advice works, and is not far above what was asked
    assert tile_count(6000, 8000, least) <= MAX_TILES < tile_count(6000, 8000, least - 32 // 8)


def test_a_large_image_with_a_small_tile_fails_before_any_scoring(tmp_path):
    """What ``scgan predict --tile`` on an 8000 x 6000 image does when its tiles would be too many: one line at the
    image, no tile scored (before, 333,500 tiles of 16 px ran for hours without a line)."""
    big = tmp_path / "big.png"
    Image.new("RGB", (8000, 6000), (90, 90, 90)).save(big)
    calls: list[tuple[int, ...]] = []
    with pytest.raises(TileLimitError, match=f"would take {tile_count(6000, 8000, 32):,} tiles"):
        run_predict([big], tmp_path / "out", detector=_detector(calls, tile=32), progress=False)
    assert calls == []


def test_tiling_that_runs_long_says_how_long_it_has_left():
    now = [0.0]
    out = io.StringIO()
    progress = TileProgress(out, after=10, every=5, clock=lambda: now[0])
    for done, elapsed in ((10, 2.0), (40, 10.0), (50, 12.0), (70, 16.0), (100, 20.0)):
        now[0] = elapsed
        progress(done, 100, elapsed)
    lines = out.getvalue().splitlines()
    # Quiet for the first 10 s, then a line at most every 5 s; the time left from the rate so far (40 in 10 s).
    assert lines == ["tiling: 40 of 100 tiles of this image, 10 s so far, about 15 s left",
                     "tiling: 70 of 100 tiles of this image, 16 s so far, about 7 s left"]


def test_the_detector_reports_its_tiles_as_it_goes():
    reports = []
    det = _detector(tile=32, batch_size=4)
    det.tile_progress = lambda done, total, elapsed: reports.append((done, total))
    det.predict(np.zeros((100, 70, 3), np.uint8))
    n = tile_count(100, 70, 32)
    assert reports[-1] == (n, n) and [d for d, _ in reports] == sorted({min(k + 4, n) for k in range(0, n, 4)})


def test_each_test_draws_from_generators_seeded_by_its_id(request):
    """conftest.py seeds the global generators per test (shifted by SCGAN_TEST_SEED): an unseeded draw repeats."""
    import zlib

    seed = shifted_seed(zlib.crc32(request.node.nodeid.encode())) % 2**32
    drawn = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    assert torch.equal(drawn[0], torch.rand(3)) and np.array_equal(drawn[1], np.random.rand(3))
    assert drawn[2] == random.random()


def test_the_service_bounds_its_workers_from_python_as_on_the_command_line():
    pytest.importorskip("starlette")
    from scgan.serve.guards import Limits

    assert Limits(workers=64, max_connections=100).workers == 64
    with pytest.raises(ValueError, match="workers must be a whole number from 1 to 64"):
        Limits(workers=65, max_connections=100)


@pytest.mark.parametrize("kwargs, name", [
    ({"queue": 5000}, "queue"), ({"max_pixels": 2_000_000_000}, "max_pixels"),
    ({"max_connections": 20_000}, "max_connections"), ({"max_upload_bytes": 5000 << 20}, "max_upload_bytes"),
])
def test_serve_limits_from_python_take_the_command_lines_ranges(kwargs, name):
    from scgan.serve.guards import Limits

    with pytest.raises(ValueError, match=name):
        Limits(**kwargs)


def test_export_from_python_refuses_an_opset_outside_the_command_lines_range(tmp_path):
    from scgan.artifacts.export import export_onnx

    with pytest.raises(ValueError, match="opset must be a whole number from 18"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx", opset=11)  # refused before the file is read
