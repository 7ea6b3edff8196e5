"""Presets, YAML and key=value overrides."""
import pytest

from scgan.config import config_from_dict, get_preset, load_config, to_yaml

pytestmark = pytest.mark.unit


def test_paper_preset_is_the_paper():
    c = get_preset("paper")
    assert c.model.image_size == 256 and c.model.max_channels is None and c.model.nz == 100
    assert c.train.batch_size == 64 and c.train.epochs == 400 and c.train.lr == 2e-4
    assert (c.loss.w_enc, c.loss.w_con, c.loss.w_adv, c.loss.w_ssim) == (1, 40, 1, 40)
    assert c.score.beta == 0.8 and c.augment.n_patches == 30 and c.augment.patch_area == 0.01


def test_overrides_bare_and_dotted(tmp_path):
    cfg = load_config("cpu", overrides=["image_size=32", "epochs=3", "seed=7", "model.max_channels=none",
                                        "attention=false", "beta=0.5"])
    assert cfg.model.image_size == 32 and cfg.train.epochs == 3 and cfg.train.seed == 7
    assert cfg.model.max_channels is None and cfg.model.attention is False and cfg.score.beta == 0.5


def test_yaml_nested_and_flat(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("preset: cpu\nmodel:\n  image_size: 128\nepochs: 5\n")
    cfg = load_config("paper", yaml_path=p, overrides={"epochs": 6})
    assert cfg.preset == "cpu" and cfg.model.image_size == 128 and cfg.train.epochs == 6


def test_round_trip():
    cfg = load_config("cpu", overrides=["n_patches=10"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert "n_patches: 10" in to_yaml(cfg)


@pytest.mark.parametrize(
    "override, message",
    [("image_size=48", "power of two"), ("nonsense=1", "unknown config key"), ("epochs=abc", "integer"),
     ("batch_size=1", "batch_size"), ("beta=2", "beta"), ("epochs", "key=value"),
     ("output_scale=0.9", "output_scale")],
)
def test_bad_overrides(override, message):
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=message):
        check_config(load_config("cpu", overrides=[override]))


def test_unknown_preset_and_missing_yaml(tmp_path):
    with pytest.raises(ValueError, match="valid presets"):
        load_config("fast")
    with pytest.raises(FileNotFoundError):
        load_config("cpu", yaml_path=tmp_path / "nope.yaml")


def test_sigma_values():
    from scgan.config import load_config

    assert load_config("cpu").score.sigma is None
    assert load_config("cpu", overrides=["sigma=auto"]).score.sigma == "auto"
    assert load_config("cpu", overrides=["sigma=2"]).score.sigma == 2.0
    for bad in ("sigma=Auto", "sigma=-1", "sigma=inf", "sigma=nan", "sigma=100"):
        with pytest.raises(ValueError, match="sigma"):
            load_config("cpu", overrides=[bad])


@pytest.mark.unit
def test_list_settings_from_the_command_line_and_yaml():
    cfg = load_config("cpu", overrides=["score.selection_strengths=1, 0.5"])
    assert cfg.score.selection_strengths == [1.0, 0.5]
    assert load_config("default").score.selection_strengths == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match=r"selection_strengths: expected a number, got 'x'"):
        load_config("cpu", overrides=["score.selection_strengths=1,x"])
    with pytest.raises(ValueError, match=r"selection_strengths must be one or more numbers in \(0, 1\]"):
        load_config("cpu", overrides=["score.selection_strengths=0"])


@pytest.mark.parametrize("name", ["default", "scgan", "cpu", "gpu", "paper"])
def test_shipped_config_files_are_generated_from_the_schema(name):
    """configs/*.yaml are written by `make configs` from the schema's comments and the presets, never by hand."""
    import yaml

    from scgan.config import PRESETS, commented_yaml
    from scgan.config.commented import preset_file

    assert set(PRESETS) == {"default", "scgan", "cpu", "gpu", "paper"}
    text = preset_file(name).read_text(encoding="utf-8")
    assert text == commented_yaml(get_preset(name)), f"configs/{name}.yaml is stale: run 'make configs'"
    assert yaml.safe_load(text) == get_preset(name).to_dict()


def test_a_setting_of_the_other_kind_of_model_is_refused():
    with pytest.raises(ValueError, match=r"model.image_size is a setting of the scgan model.*--preset scgan"):
        load_config("default", overrides=["image_size=64"])
    with pytest.raises(ValueError, match=r"patchcore.resolution is a setting of the patchcore model"):
        load_config("cpu", overrides=["patchcore.resolution=320"])
    assert load_config("default", overrides=["seed=3"]).train.seed == 3  # every kind has a seed
    assert load_config("cpu", overrides=["model.kind=patchcore", "resolution=320"]).patchcore.resolution == 320
