"""Presets, YAML and key=value overrides."""
import pytest

from scgan.config import config_from_dict, get_preset, load_config, to_yaml

pytestmark = pytest.mark.unit


def test_paper_preset_is_the_paper():
    c = get_preset("paper")
    assert c.model.image_size == 256 and c.model.max_channels is None and c.model.nz == 100
    assert c.train.batch_size == 64 and c.train.epochs == 400 and c.train.lr == 2e-4
    assert (c.loss.w_enc, c.loss.w_con, c.loss.w_adv, c.loss.w_ssim) == (1, 40, 1, 40)
    assert c.model.beta == 0.8 and c.augment.n_patches == 30 and c.augment.patch_area == 0.01


def test_overrides_bare_and_dotted(tmp_path):
    cfg = load_config("cpu", overrides=["image_size=32", "epochs=3", "seed=7", "model.max_channels=none",
                                        "attention=false", "beta=0.5"])
    assert cfg.model.image_size == 32 and cfg.train.epochs == 3 and cfg.seed == 7
    assert cfg.model.max_channels is None and cfg.model.attention is False and cfg.model.beta == 0.5


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


@pytest.mark.parametrize("name", ["default", "scgan", "cpu", "gpu", "paper", "fusion"])
def test_shipped_config_files_are_generated_from_the_schema(name):
    """configs/*.yaml are written by `make configs` from the schema's comments and the presets, never by hand."""
    import yaml

    from scgan.config import PRESETS, commented_yaml
    from scgan.config.commented import preset_file

    assert set(PRESETS) == {"default", "scgan", "cpu", "gpu", "paper", "fusion"}
    text = preset_file(name).read_text(encoding="utf-8")
    assert text == commented_yaml(get_preset(name)), f"configs/{name}.yaml is stale: run 'make configs'"
    assert yaml.safe_load(text) == get_preset(name).to_dict()


def test_a_setting_of_the_other_kind_of_model_is_refused():
    with pytest.raises(ValueError, match=r"model.image_size is a setting of the scgan model.*--preset scgan"):
        load_config("default", overrides=["image_size=64"])
    with pytest.raises(ValueError, match=r"patchcore.resolution is a setting of the patchcore model"):
        load_config("cpu", overrides=["patchcore.resolution=320"])
    assert load_config("default", overrides=["seed=3"]).seed == 3  # every kind has a seed
    assert load_config("cpu", overrides=["model.kind=patchcore", "resolution=320"]).patchcore.resolution == 320


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "configs_with_every_section"


def test_a_config_holds_its_own_kinds_settings_only():
    from scgan.config import commented_yaml

    default = get_preset("default")
    assert default.section_names() == ("patchcore", "data", "score", "runtime")
    shown = [line.split(":")[0].strip() for line in commented_yaml(default).splitlines()
             if not line.lstrip().startswith("#")]
    for scgan_setting in ("model", "loss", "augment", "train", "image_size", "w_con", "n_patches", "epochs", "beta",
                          "sync_batchnorm", "head"):
        assert scgan_setting not in shown, scgan_setting
    with pytest.raises(AttributeError, match="'model' is a section of the scgan model; this config's kind is"):
        default.model  # noqa: B018
    assert set(get_preset("cpu").to_dict()) == {"preset", "kind", "seed", "model", "loss", "augment", "train", "data",
                                                "score", "runtime"}
    switched = load_config("cpu", overrides=["kind=patchcore"])
    assert switched.section_names()[0] == "patchcore" and "model" not in switched.to_dict()


@pytest.mark.parametrize("name", ["default", "cpu"])
def test_a_yaml_file_with_every_kinds_sections_still_loads(name, caplog):
    """A copy of a preset file from when every config carried every kind's sections: the other kind's sections,
    at their defaults, are ignored with one line; the config is the preset's."""
    with caplog.at_level("WARNING", logger="scgan"):
        cfg = load_config("paper", yaml_path=FIXTURES / f"{name}.yaml")
    expected = get_preset(name)
    if name == "default":
        expected.patchcore.neighbourhood = 1  # the file holds its time's default; settings it lacks take today's
        expected.score.default_score = "auto"
    assert cfg == expected
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and ("loss, augment, train" in ignored[0] if name == "default" else
                                  "patchcore section" in ignored[0])


def test_a_yaml_file_that_changes_another_kinds_setting_is_refused(tmp_path):
    text = (FIXTURES / "default.yaml").read_text().replace("  epochs: 400", "  epochs: 10")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match="is a setting of the scgan model.*--preset scgan"):
        load_config("paper", yaml_path=tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("kind: patchcore\nmodel:\n  image_size: 64\n")
    with pytest.raises(ValueError, match="model.image_size is a setting of the scgan model"):
        load_config("paper", yaml_path=tmp_path / "d.yaml")


def test_old_keys_are_read_at_their_new_place():
    cfg = load_config("paper", overrides={"model.kind": "patchcore", "train.seed": 5})
    assert cfg.kind == "patchcore" and cfg.seed == 5
    cfg = load_config("cpu", overrides={"score.beta": 0.3, "runtime.sync_batchnorm": True})
    assert cfg.model.beta == 0.3 and cfg.train.sync_batchnorm is True
    stored = get_preset("default").to_dict()  # a stored config of before: every kind's sections, kind in model
    old = {**{k: v for k, v in stored.items() if k not in ("kind", "seed")}, "model": {"kind": "patchcore"},
           "train": {"seed": 2, "epochs": 400}, "score": {**stored["score"], "beta": 0.8}}
    from scgan.config import migrate_config

    again = config_from_dict(migrate_config(old))
    assert again.kind == "patchcore" and again.seed == 2 and again.score == get_preset("default").score


def test_run_keys_of_unchanged_settings_did_not_change():
    """The run store's keys of the presets, as computed before a config held only its kind's sections (the runs
    stored under them stay found)."""
    from scgan.experiments.runs import config_key

    before = {"scgan": "ee49e67bfd4b", "cpu": "1411750d74a3", "gpu": "cacc5a5acc5d", "paper": "901a34728e7c"}
    assert {name: config_key(get_preset(name)) for name in before} == before
    earlier_default = ["patchcore.neighbourhood=1", "patchcore.metric=euclidean",  # the default preset's settings then
                       "patchcore.pad=0", "score.threshold_source=validation", "patchcore.position_grid=0"]
    assert config_key(load_config("default", overrides=earlier_default)) == "b1759f5bea67"
    assert config_key(load_config("default", overrides=[*earlier_default, "seed=3"])) == "c296fe7378ee"
    assert config_key(load_config("cpu", overrides=["sigma=auto"])) == "20afa4e6649a"


def test_a_yaml_file_of_the_earlier_layout_keeps_what_it_meant(tmp_path, caplog):
    """Its calibration defect size (augment.patch_area then), its seed where it stood, no "ignored" line for a
    section only moved keys filled, and a refusal that names the setting that differs."""
    text = (FIXTURES / "default.yaml").read_text()
    (tmp_path / "area.yaml").write_text(text.replace("  patch_area: 0.01", "  patch_area: 0.03"))
    assert load_config("paper", yaml_path=tmp_path / "area.yaml").score.selection_patch_area == 0.03
    (tmp_path / "sync.yaml").write_text(text.replace("  sync_batchnorm: false", "  sync_batchnorm: true"))
    with pytest.raises(ValueError, match=r"^train.sync_batchnorm is a setting of the scgan model"):
        load_config("paper", yaml_path=tmp_path / "sync.yaml")
    (tmp_path / "seed.yaml").write_text("train:\n  seed: 3\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="scgan"):
        assert load_config("default", yaml_path=tmp_path / "seed.yaml").seed == 3
    assert not caplog.records
    (tmp_path / "epochs.yaml").write_text("kind: patchcore\ntrain:\n  epochs: 400\n")  # at its default: ignored
    assert load_config("cpu", yaml_path=tmp_path / "epochs.yaml").kind == "patchcore"


def test_kind_on_the_command_line_does_not_drop_a_files_settings(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  image_size: 32\n")
    with pytest.raises(ValueError, match="kind=patchcore on the command line would drop the model settings"):
        load_config("cpu", yaml_path=tmp_path / "c.yaml", overrides=["kind=patchcore"])


def test_a_kind_registered_again_replaces_its_sections():
    import dataclasses

    from scgan.config import KIND_SECTIONS, register_kind_sections

    try:
        for _ in range(2):  # a reloaded module makes a new class of the same name
            register_kind_sections("stand_in", {"stand_in": dataclasses.make_dataclass("StandIn", [])})
    finally:
        KIND_SECTIONS.pop("stand_in", None)


def test_a_file_holding_a_former_default_says_so(caplog):
    with caplog.at_level("WARNING", logger="scgan"):
        cfg = load_config("paper", yaml_path=FIXTURES / "default.yaml")
    assert cfg.patchcore.neighbourhood == 1
    assert any("patchcore.neighbourhood = 1 was the default of an earlier release (today's: 3)" in r.getMessage()
               for r in caplog.records)
