"""DDP on 2 CPU processes (gloo): identical weights on both ranks, disjoint data shards, one checkpoint.

The test runs this file as a script (``python tests/test_ddp.py OUT CONFIG_JSON``): Lightning's DDP
launcher then starts rank 1 by re-running the same command, so both ranks build the same
:class:`RankRecorder`, which writes what its rank saw and the hash of its final weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DistributedSampler

from conftest import TINY

pytestmark = pytest.mark.system

THIS = Path(__file__).resolve()


def state_hash(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names and values), in state_dict order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankRecorder(L.Callback):
    """Records the training paths each rank's batches held and its final weights, to OUT/rank<r>.json."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.paths: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.paths += list(batch["path"])

    def on_fit_end(self, trainer, pl_module) -> None:
        dist = torch.distributed
        record = {
            "rank": trainer.global_rank, "world_size": trainer.world_size, "paths": self.paths,
            "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
            "generator": state_hash(pl_module.generator), "discriminator": state_hash(pl_module.discriminator),
            "calibration": pl_module.calibration.to_dict() if pl_module.calibration else None,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _worker(output: str, overrides: str) -> None:
    from scgan.config import load_config
    from scgan.training.fit import train

    cfg = load_config("cpu", overrides=json.loads(overrides))
    train(cfg, output, progress=False, callbacks=[RankRecorder(Path(output) / "ranks")])


def test_ddp_two_cpu_processes(tmp_path, demo_root, demo_category):
    from scgan.config import load_config
    from scgan.training.datamodule import SCGANDataModule

    overrides = {**TINY, "data.root": str(demo_root), "data.category": demo_category, "epochs": 1,
                 "accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    cfg = load_config("cpu", overrides=overrides)
    train = SCGANDataModule(cfg).dataset("train")
    batch = len(train) // 2 // 2  # two steps per rank: DDP must also work after its first iteration
    overrides["batch_size"] = batch
    # What each rank should see: its shard of the seeded, epoch-0 permutation, in full batches.
    shards = [[str(train.samples[i].path) for i in DistributedSampler(train, num_replicas=2, rank=r, shuffle=True,
                                                                      seed=cfg.seed, drop_last=True)]
              for r in (0, 1)]
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK",
                                                              "NODE_RANK", "WORLD_SIZE", "RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(THIS), str(out), json.dumps(overrides)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["backend"] for r in ranks} == {"gloo"}
    # One model: the same weights (parameters and BatchNorm buffers) and calibration on both ranks.
    assert ranks[0]["generator"] == ranks[1]["generator"]
    assert ranks[0]["discriminator"] == ranks[1]["discriminator"]
    assert ranks[0]["calibration"] == ranks[1]["calibration"] is not None
    # Each rank trained on its own half of the training split: disjoint shards, in the sampler's order.
    assert [r["paths"] for r in ranks] == [shard[: 2 * batch] for shard in shards]
    assert not set(ranks[0]["paths"]) & set(ranks[1]["paths"])
    assert len(set(shards[0] + shards[1])) == len(train) // 2 * 2
    # Rank 0 alone writes files: one training checkpoint, one model file, one set of logs.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in out.glob("*.pt")) == ["model.pt"]
    assert (out / "config.yaml").exists() and (out / "train_summary.json").exists()
    from scgan.artifacts.model_file import load_model

    assert state_hash(load_model(out / "model.pt").parts["generator"]) == ranks[0]["generator"]


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
