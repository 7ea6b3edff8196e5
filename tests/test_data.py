"""Image I/O and the MVTec AD / BTAD / folder datasets: layouts, splits, caching and bad input."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from helpers import SHARED_DATA, make_fake_btad, make_fake_folder, make_fake_mvtec, square_mask, write_image, write_mask
from scgan.data import io
from scgan.data.datasets import (
    BTAD,
    BTAD_PRODUCTS,
    MVTEC_OBJECTS,
    MVTEC_TEXTURES,
    FolderDataset,
    MVTecAD,
    build_dataset,
    category_kind,
    split_train_val,
)
from scgan.data.io import ImageReadError, image_to_tensor, load_image, load_mask, tensor_to_image

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- image I/O


def _save(tmp_path: Path, name: str, im: Image.Image) -> Path:
    p = tmp_path / name
    im.save(p)
    return p


def test_grayscale_image_becomes_three_equal_channels(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = load_image(_save(tmp_path, "g.png", Image.fromarray(a, "L")), None)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert (img == a[:, :, None]).all()


def test_rgba_is_composited_on_black(tmp_path):
    a = np.zeros((8, 8, 4), dtype=np.uint8)
    a[..., :3] = (200, 100, 50)
    a[:4, :, 3] = 255  # top half opaque
    a[4:, :, 3] = 0  # bottom half transparent
    img = load_image(_save(tmp_path, "a.png", Image.fromarray(a, "RGBA")), None)
    assert img.shape == (8, 8, 3)
    assert (img[:4] == (200, 100, 50)).all() and (img[4:] == 0).all()


def test_palette_image_uses_palette_colours(tmp_path):
    im = Image.new("P", (6, 6))
    im.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    im.putdata([0, 1] * 18)
    img = load_image(_save(tmp_path, "p.png", im), None)
    assert img.shape == (6, 6, 3)
    assert {tuple(v) for v in img.reshape(-1, 3)} == {(10, 20, 30), (250, 240, 230)}


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_image_is_scaled_to_8_bits(tmp_path, mode):
    im = Image.fromarray(np.array([[0, 257 * 128], [65535, 257 * 10]], dtype=np.uint16))
    im = im.convert(mode) if im.mode != mode else im
    assert im.mode == mode
    path = tmp_path / "wide.tif"  # TIFF keeps both modes
    im.save(path)
    img = load_image(path, None)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[..., 0].tolist() == [[0, 128], [255, 10]]


def test_16_bit_png_loads(tmp_path):
    a = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    path = _save(tmp_path, "d.png", Image.fromarray(a))
    img = load_image(path, 4)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert img.max() > 200  # properly scaled, not clipped to 255 or left near 0


def test_resize_ignores_aspect_and_reports_original_size(tmp_path):
    path = write_image(tmp_path / "wide.png", (20, 40))
    img, orig = io.load_image_with_size(path, 16)
    assert img.shape == (16, 16, 3) and orig == (20, 40)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image at all", "truncated", "bad-pixels"],
    ids=["zero-byte", "corrupt", "truncated", "bad-pixels"],
)
def test_unreadable_image_names_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    if content == "truncated":
        good = write_image(tmp_path / "good.png", 32).read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "bad-pixels":
        good = bytearray(write_image(tmp_path / "good.png", 32).read_bytes())
        good[60:200] = bytes(140)  # header intact, compressed data wiped
        path.write_bytes(bytes(good))
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(path, 16)
    with pytest.raises(ImageReadError, match="broken.png"):
        load_mask(path, 16)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no pixel data worth decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )


@pytest.mark.parametrize("side", [12_000, 60_000])  # between 1x and 2x Pillow's limit, and far above
def test_decompression_bomb_is_an_image_read_error(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header(side, side))
    with pytest.raises(ImageReadError, match="bomb.png"):
        load_image(path, 32)


def test_pixel_limit_is_ours(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", 32)
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 32 * 32 - 1)
    with pytest.raises(ImageReadError, match="big.png"):
        load_image(path, 16)


def test_mask_is_binarised_and_nearest_resized(tmp_path):
    m = np.zeros((8, 8), dtype=np.uint8)
    m[:4, :4] = 1  # any non-zero value counts, not only 255
    mask = load_mask(_save(tmp_path, "m.png", Image.fromarray(m)), 4)
    assert mask.dtype == bool and mask.shape == (4, 4)
    assert mask[:2, :2].all() and mask.sum() == 4


def test_rgb_and_palette_masks(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (0, 0, 255)
    assert load_mask(_save(tmp_path, "rgb.png", Image.fromarray(rgb)), None).sum() == 1
    pal = Image.new("P", (4, 4))
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white here
    pal.putdata([1] * 15 + [0])
    assert load_mask(_save(tmp_path, "pal.png", pal), None).sum() == 1


def test_tensor_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = image_to_tensor(img)
    assert t.shape == (2, 3, 5, 7) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert (tensor_to_image(t) == img).all()
    assert (tensor_to_image(t[0]) == img[0]).all()


def test_loaded_arrays_are_writable_and_read_only_input_is_accepted(tmp_path, recwarn):
    path = write_image(tmp_path / "w.png", 16)
    assert load_image(path, None).flags.writeable and load_image(path, 8).flags.writeable
    ro = np.zeros((4, 4, 3), dtype=np.uint8)
    ro.flags.writeable = False
    assert image_to_tensor(ro).shape == (3, 4, 4)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_image_extensions_case_insensitive_and_hidden_files_skipped():
    assert io.is_image_file("a.PNG") and io.is_image_file("b.JpEg") and io.is_image_file("c.tiff")
    assert not io.is_image_file("._a.png") and not io.is_image_file("notes.txt")
    assert set(io.IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def test_inputs_expand_folders_by_one_rule_for_hidden_names(tmp_path):
    """What predict scores and update adds: a folder's own images before its subfolders', hidden files and folders
    left out at any depth; a named file as given; a missing path refused; nothing found refused unless allowed."""
    for rel in ("a/z.png", "a/b/y.png", "a/.cache/sub/x.png", "a/b/.x.png", "a/notes.txt", "c/w.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files = io.expand_inputs([tmp_path / "a", tmp_path / "a" / "notes.txt"])
    assert [str(f.relative) for f in files] == ["z.png", "b/y.png", "notes.txt"]
    assert files[0].path == tmp_path / "a" / "z.png"
    assert io.images_under(tmp_path) == [tmp_path / "a" / "z.png", tmp_path / "a" / "b" / "y.png",
                                         tmp_path / "c" / "w.jpg"]
    assert io.is_hidden("a/.cache/x.png") and io.is_hidden("._x.png") and not io.is_hidden("a/b.png")
    (tmp_path / "empty").mkdir()
    assert io.expand_inputs([tmp_path / "empty"], allow_empty=True) == []
    with pytest.raises(ValueError, match="no images"):
        io.expand_inputs([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="input not found: .*gone.png"):
        io.expand_inputs([tmp_path / "gone.png"])


# ---------------------------------------------------------------- MVTec layout


@pytest.fixture
def mvtec(tmp_path):
    return make_fake_mvtec(tmp_path / "mvtec", "bottle", n_train=10, n_good_test=3, defects={"broken": 2, "crack": 2})


def test_train_val_split_is_disjoint_covering_and_seeded(mvtec):
    all_paths = sorted((mvtec / "bottle" / "train" / "good").iterdir())
    torch.manual_seed(123)
    np.random.seed(123)
    tr = MVTecAD(mvtec, "bottle", "train", spec=16, val_fraction=0.3)
    va = MVTecAD(mvtec, "bottle", "val", spec=16, val_fraction=0.3)
    tr_p, va_p = {s.path for s in tr.samples}, {s.path for s in va.samples}
    assert len(va_p) == 3 and not tr_p & va_p and tr_p | va_p == set(all_paths)
    torch.manual_seed(7)  # the split must not depend on the global generators
    np.random.seed(7)
    assert {s.path for s in MVTecAD(mvtec, "bottle", "val", spec=16, val_fraction=0.3).samples} == va_p
    others = {frozenset(split_train_val(all_paths, 0.3, seed)[1]) for seed in range(1, 6)}
    assert len(others - {frozenset(va_p)}) >= 1
    assert (tr.labels == 0).all() and all(s.defect == "good" for s in tr.samples)


def test_validation_gets_at_least_one_image():
    paths = [Path(f"{i}.png") for i in range(5)]
    train, val = split_train_val(paths, 0.01, 0)
    assert len(val) == 1 and len(train) == 4
    assert len(split_train_val([Path(f"{i}.png") for i in range(209)], 0.1, 0)[1]) == 21
    with pytest.raises(ValueError, match="at least 2"):
        split_train_val(paths[:1], 0.1, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(paths, 0.0, 0)


def test_test_split_items_masks_and_caching(mvtec):
    ds = MVTecAD(mvtec, "bottle", "test", spec=24)
    assert len(ds) == 7 and ds.labels.tolist().count(1) == 4 and ds.has_masks
    assert [s.path for s in ds.samples] == sorted(s.path for s in ds.samples)
    assert ds.images.shape == (7, 24, 24, 3) and ds.images.dtype == np.uint8  # decoded once, cached
    assert ds.kind == "object" and ds.category == "bottle" and ds.split == "test"
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, 24, 24) and item["mask"].dtype == torch.float32
        assert item["label"].dtype == torch.int64 and item["label"].dim() == 0
        assert item["orig_size"].tolist() == [24, 24] and item["orig_size"].dtype == torch.int64
        m = item["mask"][0].bool()
        if item["label"] == 1:
            assert item["defect"] in ("broken", "crack") and m.any()
            # the helper paints the defect white exactly where its mask is: the mask belongs to this image
            assert (item["image"][:, m] == 1.0).all()
            assert Path(ds.samples[i].mask_path).stem == Path(item["path"]).stem + "_mask"
        else:
            assert item["defect"] == "good" and not m.any()


def test_dataloader_batches(mvtec):
    batch = next(iter(DataLoader(MVTecAD(mvtec, "bottle", "test", spec=16), batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].shape == (4,)
    assert batch["orig_size"].shape == (4, 2) and len(batch["path"]) == 4


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MVTecAD(tmp_path / "nowhere", "bottle")


def test_missing_category_folder(mvtec):
    with pytest.raises(FileNotFoundError, match="carpet.*present.*bottle"):
        MVTecAD(mvtec, "carpet")


def test_unknown_category_lists_valid_names(mvtec):
    with pytest.raises(ValueError, match="bottel") as e:
        MVTecAD(mvtec, "bottel")
    assert "bottle" in str(e.value) and "carpet" in str(e.value) and "weave" in str(e.value)


def test_root_pointing_at_a_category_gets_a_hint(mvtec):
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        MVTecAD(mvtec / "bottle", "bottle")
    with pytest.raises(ValueError, match="pass its parent"):
        MVTecAD(mvtec / "bottle", "my_bottles")


def test_any_folder_with_train_good_is_a_category(tmp_path):
    root = make_fake_mvtec(tmp_path, "my_part", n_train=4)
    sizes = [len(MVTecAD(root, "my_part", split, spec=16)) for split in ("train", "val")]
    assert sizes == [3, 1]


def test_empty_training_folder(tmp_path):
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "bottle" / "train" / "good" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="no training images in .*good"):
        MVTecAD(tmp_path, "bottle")


def test_unknown_split_and_dataset(mvtec):
    with pytest.raises(ValueError, match="valid splits"):
        MVTecAD(mvtec, "bottle", "validation")
    with pytest.raises(ValueError, match="mvtec, btad, folder"):
        build_dataset("imagenet", mvtec, "bottle", "train", 16)


@pytest.mark.parametrize("kind", ["zero-byte", "corrupt", "truncated"])
def test_bad_training_image_fails_or_is_skipped(mvtec, kind):
    bad = mvtec / "bottle" / "train" / "good" / "005.png"
    data = bad.read_bytes()
    bad.write_bytes({"zero-byte": b"", "corrupt": b"\x89PNG garbage", "truncated": data[: len(data) // 3]}[kind])
    kw = dict(spec=16, val_fraction=0.5)
    train_paths, _ = split_train_val(sorted(bad.parent.iterdir()), 0.5, 0)
    split = "train" if bad in train_paths else "val"  # the split holding the bad file
    with pytest.raises(ImageReadError, match="005.png"):
        MVTecAD(mvtec, "bottle", split, **kw)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = MVTecAD(mvtec, "bottle", split, skip_bad_images=True, **kw)
    assert ds.skipped == [bad] and len(ds) == 4 and bad not in {s.path for s in ds.samples}
    assert ds.images.shape[0] == 4


def test_bad_mask_is_skipped_with_its_image(mvtec):
    bad = mvtec / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    bad.write_bytes(b"")
    with pytest.raises(ImageReadError, match="000_mask.png"):
        MVTecAD(mvtec, "bottle", "test", spec=16)
    with pytest.warns(UserWarning):
        ds = MVTecAD(mvtec, "bottle", "test", spec=16, skip_bad_images=True)
    assert ds.skipped == [bad] and len(ds) == 6


def test_non_image_files_are_ignored(mvtec):
    good = mvtec / "bottle" / "train" / "good"
    (good / "notes.txt").write_text("hello")
    (good / ".DS_Store").write_bytes(b"\x00\x01")
    (good / "._000.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork with an image extension
    (good / "subdir").mkdir()
    (mvtec / "bottle" / "test" / "broken" / "Thumbs.db").write_bytes(b"x")
    tr = MVTecAD(mvtec, "bottle", "train", spec=16, val_fraction=0.2)
    va = MVTecAD(mvtec, "bottle", "val", spec=16, val_fraction=0.2)
    assert len(tr) + len(va) == 10 and not tr.skipped and not va.skipped
    assert len(MVTecAD(mvtec, "bottle", "test", spec=16)) == 7


def test_anomalous_image_without_mask(mvtec):
    (mvtec / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"crack[/\\]001.png.*require_masks=False"):
        MVTecAD(mvtec, "bottle", "test", spec=16)
    ds = MVTecAD(mvtec, "bottle", "test", spec=16, require_masks=False)
    assert not ds.has_masks and len(ds) == 7
    i = next(i for i, s in enumerate(ds.samples) if s.path.name == "001.png" and s.defect == "crack")
    assert ds[i]["label"] == 1 and ds[i]["mask"].sum() == 0
    assert sum(ds[j]["mask"].sum() > 0 for j in range(len(ds))) == 3  # the other masks still load


def test_mask_of_another_size_is_resized(mvtec):
    write_mask(mvtec / "bottle" / "ground_truth" / "broken" / "000_mask.png", square_mask(48, 0.5))
    ds = MVTecAD(mvtec, "bottle", "test", spec=24)
    i = next(i for i, s in enumerate(ds.samples) if s.defect == "broken" and s.path.name == "000.png")
    assert ds[i]["mask"].shape == (1, 24, 24) and ds[i]["mask"].sum() == 144  # a 24 px square at 48 -> 12 px


def test_mixed_modes_and_sizes_in_one_dataset(tmp_path):
    good = tmp_path / "bottle" / "train" / "good"
    good.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8), "L").save(good / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(good / "b.png")
    Image.fromarray(rng.integers(0, 256, (17, 17, 3), dtype=np.uint8)).convert("P").save(good / "c.bmp")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(good / "d.PNG")
    Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).save(good / "e.JPG")
    ds = MVTecAD(tmp_path, "bottle", "train", spec=16, val_fraction=0.2)
    assert ds.images.shape == (4, 16, 16, 3) and ds.images.dtype == np.uint8
    sizes = {Path(s.path).name: tuple(ds.orig_sizes[i]) for i, s in enumerate(ds.samples)}
    assert all(sizes[n] == {"a.png": (30, 20), "b.png": (20, 30), "c.bmp": (17, 17), "d.PNG": (40, 40),
                            "e.JPG": (25, 25)}[n] for n in sizes)


# ---------------------------------------------------------------- BTAD and folder layouts


@pytest.mark.parametrize(
    "image_ext,mask_ext,suffix", [(".bmp", ".png", ""), (".png", ".bmp", ""), (".bmp", ".bmp", "_mask")]
)
def test_btad(tmp_path, image_ext, mask_ext, suffix):
    root = make_fake_btad(tmp_path, "02", n_train=8, n_ok=2, n_ko=3, image_ext=image_ext, mask_ext=mask_ext,
                          mask_suffix=suffix)
    test = BTAD(root, "02", "test", spec=24)
    assert len(test) == 5 and test.labels.tolist() == [1, 1, 1, 0, 0] and test.has_masks  # sorted: ko < ok
    assert [s.defect for s in test.samples] == ["ko", "ko", "ko", "good", "good"]
    for i in range(3):
        m = test[i]["mask"][0].bool()
        assert m.any() and (test[i]["image"][:, m] == 1.0).all()
    assert not test[3]["mask"].any() and not test[4]["mask"].any()
    tr, va = BTAD(root, "02", "train", spec=16), BTAD(root, 2, "val", spec=16)
    assert len(tr) + len(va) == 8 and va.category == "02"
    assert build_dataset("btad", root, "02", "test", 16).labels.sum() == 3


def test_btad_unknown_product(tmp_path):
    root = make_fake_btad(tmp_path, "01")
    with pytest.raises(ValueError, match="01, 02, 03"):
        BTAD(root, "04")
    with pytest.raises(FileNotFoundError, match="03"):
        BTAD(root, "03")


def test_folder_layout(tmp_path):
    root = make_fake_folder(tmp_path / "parts", n_train=8, n_good_test=2, defects={"dent": 1, "scratch": 2})
    tr = FolderDataset(root, split="train", spec=16, val_fraction=0.25)
    va = FolderDataset(root, split="val", spec=16, val_fraction=0.25)
    assert len(tr) == 6 and len(va) == 2 and tr.category == "parts" and tr.kind == "object"
    test = build_dataset("folder", root, "", "test", 24)
    assert len(test) == 5 and test.labels.sum() == 3 and test.has_masks
    assert {s.defect for s in test.samples} == {"good", "dent", "scratch"}
    for i in range(len(test)):
        m = test[i]["mask"][0].bool()
        assert m.any() == bool(test[i]["label"])
    assert FolderDataset(root, split="train", spec=16, category="carpet").kind == "texture"


def test_flat_folder_of_normal_images(tmp_path):
    root = make_fake_folder(tmp_path / "flat", n_train=5, flat=True)
    with pytest.raises(ValueError, match="pass split='test'"):
        FolderDataset(root, "test", spec=16)
    n_train = len(FolderDataset(root, split="train", spec=16))
    assert n_train + len(FolderDataset(root, split="val", spec=16)) == 5
    with pytest.raises(FileNotFoundError, match="no test folder"):
        FolderDataset(root, split="test", spec=16)


def test_folder_without_masks(tmp_path):
    root = make_fake_folder(tmp_path / "nomask", with_masks=False)
    with pytest.raises(ValueError, match="d00.png"):
        FolderDataset(root, split="test", spec=16)
    ds = FolderDataset(root, split="test", spec=16, require_masks=False)
    assert not ds.has_masks and ds.labels.sum() == 2 and all(ds[i]["mask"].sum() == 0 for i in range(len(ds)))


def test_category_kind():
    assert all(category_kind(c) == "texture" for c in MVTEC_TEXTURES)
    assert all(category_kind(c) == "object" for c in MVTEC_OBJECTS + BTAD_PRODUCTS)
    assert category_kind("weave") == "texture" and category_kind("washer") == "object"
    assert category_kind("something_else") == "object" and len(MVTEC_OBJECTS) == 10


# ---------------------------------------------------------------- the real MVTec bottle category

BOTTLE = SHARED_DATA / "mvtec_ad"


@pytest.mark.skipif(not (BOTTLE / "bottle").is_dir(), reason="real MVTec AD data (../shared/data) not present")
def test_real_mvtec_bottle_counts_and_masks():
    tr = MVTecAD(BOTTLE, "bottle", "train", spec=32)
    va = MVTecAD(BOTTLE, "bottle", "val", spec=32)
    assert len(tr) + len(va) == 209 and len(va) == 21
    assert not {s.path for s in tr.samples} & {s.path for s in va.samples}
    test = MVTecAD(BOTTLE, "bottle", "test", spec=64)
    assert len(test) == 83 and test.has_masks and int(test.labels.sum()) == 63
    assert test.masks.shape == (83, 64, 64)
    non_empty = test.masks.reshape(83, -1).any(1)
    assert non_empty.sum() == 63 and (non_empty == test.labels.astype(bool)).all()
    for s in test.samples:
        if s.label:
            assert s.mask_path.name == s.path.stem + "_mask.png" and s.mask_path.parent.name == s.path.parent.name
    assert {s.defect for s in test.samples} == {"good", "broken_large", "broken_small", "contamination"}
