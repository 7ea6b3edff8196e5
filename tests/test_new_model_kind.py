"""A new kind of model needs its own folder's code and two registrations, nothing else: a small stand-in kind
defined here (a mean normal image; a pixel's anomaly is its distance to that mean) is registered, then fitted,
saved, loaded, re-calibrated, exported to ONNX and served through the same code every other kind goes through."""
from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

pytestmark = pytest.mark.integration

SIZE = 32


@dataclass
class MeanImageConfig:
    """The stand-in kind's own section."""

    size: int = SIZE  # images are brought to size x size pixels
    shrink: float = 1.0  # the map is |x - mean| times this

    def validate(self) -> None:
        if self.shrink <= 0:
            raise ValueError(f"meanimage.shrink must be > 0, got {self.shrink}")


class MeanImage(nn.Module):
    """The stored part: the mean of the normal training images (1, C, S, S)."""

    def __init__(self, channels: int = 3, size: int = SIZE) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, size, size))


class MeanImageScorer(nn.Module):
    """Images (B, C, S, S) -> (scores (B, 2): map_max, map_mean; map (B, S, S)): the smoothed |x - mean|."""

    names = ("map_max", "map_mean")
    probability_map = False

    def __init__(self, part: MeanImage, shrink: float, sigma: float) -> None:
        super().__init__()
        from scgan.models.scoring import GaussianBlur

        self.part, self.shrink, self.blur = part, shrink, GaussianBlur(sigma)

    @property
    def sigma(self) -> float:
        return self.blur.sigma

    def set_sigma(self, sigma: float) -> None:
        from scgan.models.scoring import GaussianBlur

        self.blur = GaussianBlur(sigma)

    def map_scores(self, smooth: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"map_max": smooth.flatten(1).amax(1), "map_mean": smooth.flatten(1).mean(1)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run(x)

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        residual = (x - self.part.mean).abs().mean(dim=1, keepdim=True) * self.shrink
        smooth = self.blur(residual)
        named = self.map_scores(smooth)
        return torch.stack([named[n] for n in self.names], dim=1), (residual if raw else smooth)[:, 0]


def _kind():
    from scgan.data.io import InputSpec
    from scgan.models.kind import ModelKind
    from scgan.models.scoring import scorer_sigma

    def build_parts(cfg, state=None):
        part = MeanImage(size=cfg.meanimage.size)
        if state is not None:
            part.load_state_dict(state["mean"], strict=True)
        return {"mean": part.eval()}

    def build_scorer(cfg, parts, calibration=None, precision=None, channels_last=None):
        sigma = scorer_sigma(cfg.score.sigma, cfg.meanimage.size, calibration)
        return MeanImageScorer(parts["mean"], cfg.meanimage.shrink, sigma).eval()

    return ModelKind(
        name="meanimage", description="distance to the mean normal image", sections={"meanimage": MeanImageConfig},
        scores={"map_max": "largest smoothed distance", "map_mean": "mean smoothed distance"},
        score_preference=("map_max", "map_mean"), score_names=lambda cfg: MeanImageScorer.names,
        input_spec=lambda cfg: InputSpec(cfg.meanimage.size), build_parts=build_parts, build_scorer=build_scorer,
        check_config=lambda cfg: None)


def _fit(cfg, output_dir: Path, resume=None, progress=True, callbacks=None):
    """The stand-in kind's fitter: the mean of the training images, then the shared calibration and run files."""
    from scgan.data.datasets import dataset_for, eval_loader
    from scgan.inference.calibrate import calibrate
    from scgan.models.registry import get_kind
    from scgan.training.result import TrainResult, write_run

    start = time.perf_counter()
    kind = get_kind(cfg.kind)
    train_set = dataset_for(cfg.data, "train", kind.input_spec(cfg))
    val_set = dataset_for(cfg.data, "val", kind.input_spec(cfg))
    parts = kind.build_parts(cfg)
    parts["mean"].mean.copy_(torch.stack([train_set[i]["image"] for i in range(len(train_set))]).mean(0, True))
    calibration = calibrate(kind.build_scorer(cfg, parts), eval_loader(val_set, 8, 0), cfg)
    wall = time.perf_counter() - start
    path = write_run(output_dir, cfg, parts, calibration, train_set, len(val_set), wall)
    return TrainResult(output_dir, path, None, 0, wall)


@pytest.fixture
def meanimage_kind():
    """The stand-in kind, registered for one test and removed after it."""
    from scgan.config import KIND_SECTIONS
    from scgan.models.registry import KINDS, register_kind
    from scgan.training.fit import FITTERS, register_fitter

    kind = register_kind(_kind())
    register_fitter(kind.name, _fit)
    yield kind
    KINDS.pop(kind.name), FITTERS.pop(kind.name), KIND_SECTIONS.pop(kind.name)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_a_new_kind_fits_saves_loads_calibrates_exports_and_serves(meanimage_kind, demo_root, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.model_file import load_model
    from scgan.cli import main
    from scgan.config import commented_yaml, load_config
    from scgan.inference.detector import Detector
    from scgan.serve import create_app
    from scgan.training.fit import train

    # Its config holds its own section and the shared ones only, set like any other.
    # (the default preset's cross-fitted threshold needs a kind that offers it: this one takes the validation images')
    cfg = load_config("default", overrides={"kind": "meanimage", "meanimage.shrink": 2.0, "data.root": str(demo_root),
                                            "data.category": "washer", "seed": 1,
                                            "score.threshold_source": "validation"})
    assert cfg.section_names() == ("meanimage", "data", "score", "runtime") and cfg.meanimage.shrink == 2.0
    shown = yaml.safe_load(commented_yaml(cfg))
    assert set(shown) == {"preset", "kind", "seed", "meanimage", "data", "score", "runtime"}
    with pytest.raises(ValueError, match="patchcore.bank_size is a setting of the patchcore model"):
        load_config("default", overrides={"kind": "meanimage", "patchcore.bank_size": 10})

    res = train(cfg, tmp_path / "fit", progress=False)
    loaded = load_model(res.model_path)
    assert loaded.config == cfg and loaded.kind.name == "meanimage" and set(loaded.parts) == {"mean"}
    assert loaded.default_score in ("map_max", "map_mean") and loaded.calibration.n_images >= 1

    # scgan test on the demo's test split: the distance to the mean image lights up the demo's defects (the test
    # split's 10 images are too few for a firm image AUROC; its pixels are many). Chance is 0.5.
    assert main(["test", "--checkpoint", str(res.model_path), "--output", str(tmp_path / "test")]) == 0
    metrics = yaml.safe_load((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["pixel_auroc"] >= 0.85

    normal = sorted((demo_root / "washer" / "train" / "good").glob("*.png"))
    assert main(["calibrate", "--checkpoint", str(res.model_path), "--normal", str(normal[0].parent),
                 "--output", str(tmp_path / "recalibrated.pt"), "threshold_quantile=0.9", "sigma=auto"]) == 0
    again = load_model(tmp_path / "recalibrated.pt")  # choosing the smoothing calls its map_scores
    assert again.calibration.quantile == 0.9 and again.scorer().sigma == again.calibration.sigma

    onnx_path = export_onnx(res.model_path, tmp_path / "model.onnx")
    image = np.asarray(Image.open(normal[0]).convert("RGB"))
    torch_result = Detector.load(res.model_path).predict(image)
    onnx_result = Detector.load(onnx_path).predict(image)
    assert onnx_result.score == pytest.approx(torch_result.score, rel=1e-4, abs=1e-5)

    with TestClient(create_app(Detector.load(res.model_path)), base_url="http://localhost") as client:
        about = client.get("/model").json()
        reply = client.post("/predict", files=[("file", ("a.png", _png(image), "image/png"))])
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["score"] == pytest.approx(torch_result.score, rel=1e-5)
    assert about["kind"] == "meanimage" and about["score_names"] == ["map_max", "map_mean"]
    capsys.readouterr()


def test_a_kind_cannot_take_a_shared_section_name():
    from scgan.config import register_kind_sections

    with pytest.raises(ValueError, match="taken by the shared settings"):
        register_kind_sections("clash", {"score": dataclasses.make_dataclass("S", [])})
