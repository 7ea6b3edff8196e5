"""The streaming fit of the PatchCore detector: images decoded one at a time, the bank chosen by merge-reduce in
memory bounded by max_patches rows, however many patches come."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.unit
def test_merge_into_an_empty_bank_is_the_coreset_of_the_rows():
    """Up to 4 x the bank's size, the greedy coreset of all rows; beyond, one filled from a sample and the rest merged
    in: rows that came, covering them about as closely (observed here: within twice the greedy cover), the outlier
    kept although the sample did not hold it."""
    from scgan.training.patchcore import choose_bank, merge_bank

    x = torch.randn(160, 12, generator=torch.Generator().manual_seed(0))
    a = choose_bank(x, 40, 4, torch.Generator().manual_seed(1))
    b = merge_bank(x[:0], x, 40, 4, torch.Generator().manual_seed(1))
    assert a.shape == (40, 12) and torch.equal(a, b)
    assert torch.equal(merge_bank(x[:10], x[10:30], 40, 4, torch.Generator()), x[:30])  # all fit: all kept
    g = torch.Generator().manual_seed(2)
    many = torch.cat([torch.randn(2000, 12, generator=g), torch.full((1, 12), 30.0)])  # one outlier, last
    once = choose_bank(many, 40, 0, torch.Generator().manual_seed(1))
    merged = merge_bank(many[:0], many, 40, 0, torch.Generator().manual_seed(2))
    assert 2000 not in torch.randperm(2001, generator=torch.Generator().manual_seed(2))[:160].tolist()  # its sample
    assert merged.shape == (40, 12) and (merged == 30.0).all(1).any()
    assert (torch.cdist(merged, many, compute_mode="donot_use_mm_for_euclid_dist").amin(1) == 0).all()
    assert torch.cdist(many, merged).amin(1).max() <= 2 * torch.cdist(many, once).amin(1).max()
    assert torch.equal(merged, merge_bank(many[:0], many, 40, 0, torch.Generator().manual_seed(2)))  # seeded


@pytest.mark.unit
def test_merging_chunk_by_chunk_keeps_rows_of_the_union_and_a_late_outlier():
    from scgan.training.patchcore import merge_bank

    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(300, 8, generator=g) for _ in range(6)]
    chunks[4][17] = 50.0  # one patch far from every other, late in the stream
    bank = chunks[0][:0]
    for chunk in chunks:
        bank = merge_bank(bank, chunk, 64, 0, g)
        assert bank.shape == (64, 8)
    union = torch.cat(chunks)
    exact = "donot_use_mm_for_euclid_dist"
    assert (torch.cdist(bank, union, compute_mode=exact).amin(1) == 0).all()  # every bank row is a row that came
    assert (bank == 50.0).all(1).any()
    # the cover is close to the one-shot coreset's: its largest nearest-row distance is at most twice as far
    from scgan.training.patchcore import choose_bank

    once = choose_bank(union, 64, 0, torch.Generator().manual_seed(0))
    assert torch.cdist(union, bank).amin(1).max() <= 2 * torch.cdist(union, once).amin(1).max()


@pytest.mark.unit
def test_the_merge_buffer_merges_when_full_and_at_close_and_nothing_else():
    from scgan.models.patchcore.coreset import MergeBuffer

    calls = []

    def merge(bank, new):
        calls.append(new.shape[0])
        return torch.cat([bank, new])[-5:]  # keep the last five rows

    buf = MergeBuffer(torch.zeros(0, 2), 10, merge)
    blocks = [torch.full((n, 2), float(i)) for i, n in enumerate((4, 4, 3, 12, 2))]
    for b in blocks:
        buf.add(b)
    assert calls == [11, 12]  # 4 + 4 + 3 reached the cap; 12 alone did
    bank = buf.close()
    assert calls == [11, 12, 2] and torch.equal(bank, torch.cat(blocks)[-5:])
    assert buf.close() is bank and calls == [11, 12, 2]  # nothing waits: no merge
    assert buf.merge_s >= 0


@pytest.mark.integration
def test_a_fit_streams_every_patch_through_merges_bounded_by_max_patches(tmp_path, demo_root, demo_category,
                                                                         monkeypatch):
    from scgan.config import load_config
    from scgan.data import datasets
    from scgan.training import patchcore
    from scgan.training.fit import train

    merges = []
    original = patchcore.merge_bank

    def recording(bank, new, *args, **kwargs):
        merges.append((bank.shape[0], new.shape[0]))
        return original(bank, new, *args, **kwargs)

    def no_cache(*args, **kwargs):
        raise AssertionError("the training images were decoded into a cache")

    monkeypatch.setattr(patchcore, "merge_bank", recording)
    real = patchcore.dataset_for
    monkeypatch.setattr(patchcore, "dataset_for",
                        lambda data, split, spec: no_cache() if split == "train" else real(data, split, spec))
    cfg = load_config("default", overrides={"patchcore.resolution": 64, "patchcore.bank_size": 96,
                                            "patchcore.max_patches": 200, "eval_batch_size": 8,
                                            "score.threshold_source": "validation",  # the fit's merges alone
                                            "patchcore.position_grid": 0,  # (map_z's grid cross-fits too)
                                            "data.root": str(demo_root), "data.category": demo_category})
    res = train(cfg, tmp_path / "fit", progress=False)
    stream = datasets.stream_for(cfg.data, "train", 64)
    per_image = (64 // 8) ** 2  # the first tapped block has stride 8
    summary = json.loads((res.output_dir / "train_summary.json").read_text())
    assert summary["n_patches"] == len(stream) * per_image  # every patch was seen, none sampled away
    assert summary["bank_size"] == 96
    assert len(merges) >= 4 and all(new <= 200 + per_image for _, new in merges)
    assert all(bank <= 96 for bank, _ in merges)
    from scgan.inference.detector import Detector

    det = Detector.load(res.model_path, backend="torch")
    assert det.threshold is not None and det.predict(stream.read(0)).score < 10 * det.threshold


@pytest.mark.unit
def test_merge_reduce_hands_each_readable_image_its_patches_once_in_the_banks_space():
    """The sample's images and the streamed ones alike (max_patches far below the patches): ``each`` gets every
    readable image once, its patches scaled and whitened as the bank's, and the bank is the same as without it."""
    from scgan.config import load_config
    from scgan.models.patchcore.model import MemoryBank
    from scgan.training.patchcore import merge_reduce

    p = load_config("default", overrides={"patchcore.bank_size": 16, "patchcore.max_patches": 40}).patchcore
    raw = {i: torch.randn(12, 6, generator=torch.Generator().manual_seed(i)) * (1 + i % 3) for i in range(20)}

    def features(index):
        return None if index == 7 else raw[index].clone()  # merge_reduce scales in place: a fresh copy each time

    seen = {}
    fitted = merge_reduce(features, 20, p, [2, 4], torch.Generator().manual_seed(0),
                          each=lambda i, f: seen.setdefault(i, []).append(f.clone()))
    plain = merge_reduce(features, 20, p, [2, 4], torch.Generator().manual_seed(0))
    assert torch.equal(fitted.bank, plain.bank) and 0 < fitted.sample_images < 19
    assert sorted(seen) == [i for i in range(20) if i != 7] and all(len(v) == 1 for v in seen.values())
    space = MemoryBank(fitted.bank, "", fitted.scale, fitted.whitening)
    for i, (f,) in seen.items():
        torch.testing.assert_close(f, space.project(raw[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_an_image_stream_gives_each_images_size_from_its_header(tmp_path):
    import numpy as np
    from PIL import Image

    from scgan.data.datasets import ImageStream, Sample
    from scgan.data.io import InputSpec

    for name, size in (("a.png", (70, 150)), ("b.jpg", (333, 120))):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / name)
    spec = InputSpec(64, keep_aspect=True, multiple=32)
    stream = ImageStream([Sample(tmp_path / n, 0, None, "good") for n in ("a.png", "b.jpg")], "x", "train", spec)
    assert [stream.shape(i) for i in range(2)] == [stream.read(i).shape[:2] for i in range(2)]
    (tmp_path / "a.png").unlink()
    with pytest.raises(OSError):
        stream.shape(0)


@pytest.mark.unit
def test_an_image_stream_skips_an_unreadable_file_only_when_told(tmp_path):
    from scgan.data.datasets import ImageStream, Sample
    from scgan.data.io import ImageReadError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    samples = [Sample(bad, 0, None, "good")]
    with pytest.raises(ImageReadError):
        ImageStream(samples, "x", "train", 32).read(0)
    stream = ImageStream(samples, "x", "train", 32, skip_bad_images=True)
    assert stream.read(0) is None and stream.skipped == [bad]


@pytest.mark.unit
def test_a_full_bank_takes_only_rows_beyond_its_radius():
    from scgan.training.patchcore import merge_bank

    g = torch.Generator().manual_seed(3)
    bank = merge_bank(torch.zeros(0, 6), torch.randn(400, 6, generator=g), 32, 0, g)
    # rows each within a hair of a bank row: covered at the bank's resolution, so the bank stays as it was
    near = bank.repeat(5, 1) + 1e-4 * torch.randn(160, 6, generator=g)
    assert torch.equal(merge_bank(bank, near, 32, 0, g), bank)
    # two rows far from everything: both kept, in a bank still of 32 rows, each row one that came
    far = torch.cat([near, torch.full((1, 6), 40.0), torch.full((1, 6), -40.0)])
    merged = merge_bank(bank, far, 32, 0, g)
    assert merged.shape == (32, 6)
    assert (merged == 40.0).all(1).any() and (merged == -40.0).all(1).any()
    came = torch.cat([bank, far])
    assert (torch.cdist(merged, came, compute_mode="donot_use_mm_for_euclid_dist").amin(1) == 0).all()
    again = merge_bank(bank, far, 32, 0, torch.Generator().manual_seed(9))
    assert torch.equal(again, merge_bank(bank, far, 32, 0, torch.Generator().manual_seed(9)))  # seeded


@pytest.mark.unit
def test_validation_split_and_kept_calibration_images_are_bounded():
    from scgan.artifacts.model_file import MAX_KEPT_CALIBRATION_IMAGES, kept_calibration_images
    from scgan.data.datasets import MAX_VAL_IMAGES, validation_size

    assert validation_size(1000, 0.1) == 100 and validation_size(10**6, 0.1) == MAX_VAL_IMAGES
    few = list(range(MAX_KEPT_CALIBRATION_IMAGES))
    assert kept_calibration_images(few) == few
    many = list(range(3 * MAX_KEPT_CALIBRATION_IMAGES + 7))
    kept = kept_calibration_images(many)
    assert len(kept) == MAX_KEPT_CALIBRATION_IMAGES == len(set(kept)) and kept[0] == 0 and kept[-1] == many[-1]


@pytest.mark.unit
def test_a_merge_in_small_blocks_is_the_merge_in_one(monkeypatch):
    from scgan.training import patchcore

    g = torch.Generator().manual_seed(5)
    bank = patchcore.merge_bank(torch.zeros(0, 6), torch.randn(300, 6, generator=g), 24, 4, g)
    new = torch.cat([torch.randn(200, 6, generator=g), 30 * torch.randn(5, 6, generator=g)])
    whole = patchcore.merge_bank(bank, new, 24, 4, torch.Generator().manual_seed(1))
    monkeypatch.setattr(patchcore, "_MERGE_CHUNK", 7)  # blocks that split the bank and the new rows unevenly
    assert torch.equal(patchcore.merge_bank(bank, new, 24, 4, torch.Generator().manual_seed(1)), whole)
    # a bank larger than the size asked for comes back at that size, even with nothing new beyond its radius
    assert patchcore.merge_bank(bank, bank[:3], 16, 4, g).shape == (16, 6)
