"""Tiny fake datasets for tests: MVTec, BTAD and plain-folder trees of 16-32 px images written with Pillow.

Every builder is deterministic (seeded) and returns the root to pass to the dataset class. Anomalous
images get a bright square and a matching mask, so tests can check masks against images.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import shifted_seed  # SCGAN_TEST_SEED shifts the images' seeds too

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"  # real data, when present


def random_image(size: int | tuple[int, int] = 24, seed: int = 0) -> np.ndarray:
    """A uint8 (H, W, 3) noise image; size is S or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(shifted_seed(seed)).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def square_mask(size: int | tuple[int, int] = 24, frac: float = 0.25) -> np.ndarray:
    """A uint8 (H, W) 0/255 mask with a centred square of side frac * min(H, W) (at least 1 px)."""
    h, w = (size, size) if isinstance(size, int) else size
    s = max(1, round(frac * min(h, w)))
    m = np.zeros((h, w), dtype=np.uint8)
    m[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s] = 255
    return m


def write_image(path: Path, size: int | tuple[int, int] = 24, seed: int = 0, mask: np.ndarray | None = None) -> Path:
    """Write a noise image (brightened where ``mask`` is set) in the format of the path's extension."""
    img = random_image(size, seed)
    if mask is not None:
        img[mask > 0] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """Write a 0/255 mask as an 8-bit grayscale file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def make_fake_mvtec(
    root: Path,
    category: str = "bottle",
    n_train: int = 10,
    n_good_test: int = 3,
    defects: dict[str, int] | None = None,
    size: int = 24,
    ext: str = ".png",
) -> Path:
    """``root/category/{train/good, test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``."""
    defects = {"broken": 2, "crack": 2} if defects is None else defects
    cat = Path(root) / category
    for i in range(n_train):
        write_image(cat / "train" / "good" / f"{i:03d}{ext}", size, seed=i)
    for i in range(n_good_test):
        write_image(cat / "test" / "good" / f"{i:03d}{ext}", size, seed=1000 + i)
    for k, (defect, n) in enumerate(sorted(defects.items())):
        for i in range(n):
            m = square_mask(size, 0.2 + 0.05 * i)
            write_image(cat / "test" / defect / f"{i:03d}{ext}", size, seed=2000 + 100 * k + i, mask=m)
            write_mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png", m)
    return Path(root)


def make_fake_btad(
    root: Path,
    product: str = "01",
    n_train: int = 8,
    n_ok: int = 2,
    n_ko: int = 3,
    size: int = 24,
    image_ext: str = ".bmp",
    mask_ext: str = ".png",
    mask_suffix: str = "",
) -> Path:
    """``root/NN/{train/ok, test/ok, test/ko, ground_truth/ko/<stem><mask_suffix><mask_ext>}``."""
    prod = Path(root) / product
    for i in range(n_train):
        write_image(prod / "train" / "ok" / f"{i:04d}{image_ext}", size, seed=i)
    for i in range(n_ok):
        write_image(prod / "test" / "ok" / f"{i:04d}{image_ext}", size, seed=1000 + i)
    for i in range(n_ko):
        m = square_mask(size, 0.3)
        stem = f"{n_ok + i:04d}"
        write_image(prod / "test" / "ko" / f"{stem}{image_ext}", size, seed=2000 + i, mask=m)
        write_mask(prod / "ground_truth" / "ko" / f"{stem}{mask_suffix}{mask_ext}", m)
    return Path(root)


def make_fake_folder(
    root: Path,
    n_train: int = 8,
    n_good_test: int = 2,
    defects: dict[str, int] | None = None,
    size: int = 24,
    flat: bool = False,
    with_masks: bool = True,
) -> Path:
    """``root/train/*.png``, ``root/test/{normal,<defect>}/``, ``root/masks/<defect>/<stem>.png``.

    ``flat``: only normal images directly in ``root`` (no train/ or test/ folders).
    """
    defects = {"scratch": 2} if defects is None else defects
    root = Path(root)
    train = root if flat else root / "train"
    for i in range(n_train):
        write_image(train / f"img{i:02d}.png", size, seed=i)
    if flat:
        return root
    for i in range(n_good_test):
        write_image(root / "test" / "normal" / f"n{i:02d}.jpg", size, seed=1000 + i)
    for k, (defect, n) in enumerate(sorted(defects.items())):
        for i in range(n):
            m = square_mask(size, 0.3)
            write_image(root / "test" / defect / f"d{i:02d}.png", size, seed=2000 + 100 * k + i, mask=m)
            if with_masks:
                write_mask(root / "masks" / defect / f"d{i:02d}.png", m)
    return root


def png_bytes(size: tuple[int, int] = (40, 30), mode: str = "RGB", seed: int = 0) -> bytes:
    """A noise image of size (W, H), converted to ``mode``, as the bytes of a PNG file."""
    img = Image.fromarray(random_image((size[1], size[0]), seed)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart_body(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``file`` part per (file name, bytes), and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
              "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http_request(port: int, method: str, path: str, files: list[tuple[str, bytes]] | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, str, dict]:
    """One request to a server on 127.0.0.1:``port`` (files sent as multipart): (status, content type, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body, kind = multipart_body(files) if files is not None else (None, None)
        conn.request(method, path, body=body, headers={**({"Content-Type": kind} if kind else {}), **(headers or {})})
        r = conn.getresponse()
        return r.status, r.getheader("content-type", ""), json.loads(r.read())
    finally:
        conn.close()


@contextlib.contextmanager
def live_server(app, start_s: float = 30.0, stop_s: float = 10.0) -> Iterator[int]:
    """``app`` (from ``scgan.serve.create_app``) served the way ``scgan serve`` serves it (uvicorn with scgan's
    protocol, ``app.state.limits``) on a free 127.0.0.1 port, in a thread; yields the port and stops the server after.

    uvicorn's records go to the root logger (``caplog`` sees them).
    """
    from scgan.serve.server import listen, make_server

    sock = listen("127.0.0.1", 0)
    server = make_server(app, app.state.limits, log_config=None)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(stop_s)
        sock.close()


def assert_normal_blue_threshold_green(loaded) -> None:
    """On the model's own normal validation images most pixels are at the blue end, at most 1 - quantile of the
    images show green anywhere, and a pixel at the map's threshold is shown green (heat 0.5)."""
    import pytest

    from scgan.calibration.stats import HEAT_AT_THRESHOLD, HEAT_LOW_QUANTILE
    from scgan.data.datasets import dataset_for, eval_loader
    from scgan.models.scoring import score_loader

    cal = loaded.calibration
    assert cal.heat_fitted and cal.heat_low < cal.heat_threshold
    val = dataset_for(loaded.config.data, "val", loaded.input_spec)
    maps = score_loader(loaded.scorer(), eval_loader(val, 8)).maps
    heat = np.concatenate([cal.heat(m).ravel() for m in maps])
    assert (heat < 0.35).mean() >= HEAT_LOW_QUANTILE  # jet is blue below 0.35 (no red, full blue)
    over = np.mean([cal.heat(m).max() > HEAT_AT_THRESHOLD for m in maps])
    assert over <= 1 - cal.quantile + 1.0 / len(maps)
    assert cal.heat(np.array([[cal.heat_threshold]], np.float32))[0, 0] == pytest.approx(HEAT_AT_THRESHOLD, abs=1e-5)


def one_error_line(err: str, command: str) -> str:
    """The single line ``scgan COMMAND: error: ...`` that a refused command printed on stderr (asserted)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"scgan {command}: error: "), err
    return lines[0]


def csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file the product wrote, as dicts by header."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
