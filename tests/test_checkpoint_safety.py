"""Model files load with weights_only=True: code-running pickles are refused, foreign or mismatched files explained."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from scgan.artifacts.model_file import MODEL_FORMAT_VERSION, CheckpointError, load_model
from scgan.cli import main


class RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer, message", [
    ("torch.save", "refusing to load .*: it holds posix.system, .* could run code"),
    ("pickle-2", "refusing to load .*: it holds posix.system, .* could run code"),
    # The safe loader stops at protocol 4's first frame, before it reaches os.system.
    ("pickle-4", "is not an scgan checkpoint, or it is damaged"),
])
@pytest.mark.unit
def test_code_running_pickle_is_refused(tmp_path, writer, message):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"format": "scgan-model", "generator": RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    with pytest.raises(CheckpointError, match=message):
        load_model(evil)
    assert not marker.exists()
    # The payload is live: unpickling it without weights_only would have run the command.
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


@pytest.mark.unit
def test_cli_refuses_code_running_checkpoint_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"generator": RunsCode(marker)}, evil)
    rc = main(["test", "--checkpoint", str(evil), "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists()
    assert err.startswith("scgan test: error: refusing to load") and "could run code" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.unit
def test_foreign_files_are_not_scgan_checkpoints(tmp_path):
    junk = tmp_path / "random.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="is not an scgan checkpoint, or it is damaged"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    with pytest.raises(CheckpointError, match="is a PyTorch file but not an scgan checkpoint"):
        load_model(plain)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="is not an scgan checkpoint"):
        load_model(tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")


def _edited(trained, tmp_path: Path, edit) -> Path:
    """A copy of the trained model file with ``edit`` applied to its (plain-data) contents."""
    res, _ = trained
    obj = torch.load(res.model_path, weights_only=True)
    edit(obj)
    path = tmp_path / "edited.pt"
    torch.save(obj, path)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("key, value", [("image_size", 64), ("base_channels", 16), ("attention", False)])
def test_config_that_does_not_match_the_weights(trained, tmp_path, key, value):
    path = _edited(trained, tmp_path, lambda o: o["config"]["model"].__setitem__(key, value))
    with pytest.raises(CheckpointError, match="the weights do not match the model its config describes"):
        load_model(path)


@pytest.mark.integration
def test_unusable_config(trained, tmp_path):
    path = _edited(trained, tmp_path, lambda o: o["config"]["model"].__setitem__("image_size", 48))
    with pytest.raises(CheckpointError, match="written with a config this scgan .* cannot use: image_size"):
        load_model(path)
    path = _edited(trained, tmp_path, lambda o: o["config"]["train"].__setitem__("no_such_key", 1))
    with pytest.raises(CheckpointError, match="cannot use: unknown config key"):
        load_model(path)


@pytest.mark.integration
def test_newer_format_version(trained, tmp_path):
    path = _edited(trained, tmp_path, lambda o: o.__setitem__("format_version", MODEL_FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"model format version {MODEL_FORMAT_VERSION + 1}, newer .* upgrade"):
        load_model(path)


@pytest.mark.integration
def test_lightning_checkpoint_loads_safely(trained):
    """Lightning's last.ckpt (plain dicts, tensors) also loads with weights_only=True."""
    res, _ = trained
    a, b = load_model(res.model_path), load_model(res.last_checkpoint)
    assert a.config == b.config and a.calibration == b.calibration
    for (ka, va), (kb, vb) in zip(a.parts["generator"].state_dict().items(), b.parts["generator"].state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.integration
def test_model_file_from_before_output_scale_loads_with_the_plain_tanh(trained, tmp_path):
    """Files written before model.output_scale existed were trained with SPEC's plain Tanh: they load as 1.0,
    whatever the preset's value is now, and restore exactly as the same weights under a plain Tanh."""
    path = _edited(trained, tmp_path, lambda o: o["config"]["model"].pop("output_scale"))
    old = load_model(path)
    assert old.config.model.output_scale == 1.0 and old.parts["generator"].decoder.output_scale == 1.0
    now = load_model(trained[0].model_path)
    assert now.config.model.output_scale == 1.1  # the cpu preset the fixture trained with
    x = torch.rand(2, 3, old.config.model.image_size, old.config.model.image_size) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(now.parts["generator"](x).x_hat,
                                   now.config.model.output_scale * old.parts["generator"](x).x_hat)
