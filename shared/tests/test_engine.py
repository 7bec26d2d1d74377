"""Training engine: exact resume, atomic checkpoints, metrics log, config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from polyzoo.shared.engine import TrainConfig, Trainer, find_last_checkpoint


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _model(init_seed: int) -> nn.Module:
    torch.manual_seed(init_seed)
    # dropout makes the run depend on the random state, which resume must restore
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def _trainer(tmp_path, name, init_seed=0, **cfg):
    model = _model(init_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    config = TrainConfig(
        name=name, runs_dir=str(tmp_path), epochs=3, batch_size=8, seed=3, log_every=1, progress=False, cpu=True, **cfg
    )
    return Trainer(
        model,
        opt,
        _data(),
        config,
        loss_fn=nn.functional.cross_entropy,
        eval_data=_data(16, 1),
        scheduler=sched,
        extra_config={"model": "mlp"},
    )


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at", [7, 10])  # mid-epoch, and exactly at an epoch boundary
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, stop_at):
    full = _trainer(tmp_path, "full")
    full.fit()
    reference = {k: v.clone() for k, v in full.unwrapped_model.state_dict().items()}

    part = _trainer(tmp_path, "part", checkpoint_every=stop_at // 2 if stop_at % 2 == 0 else 5)

    def interrupt(trainer, record):
        if trainer.global_step == stop_at:
            raise _Interrupt

    part.callbacks.append(interrupt)
    with pytest.raises(_Interrupt):
        part.fit()
    assert find_last_checkpoint(tmp_path / "part") is not None

    # a new process would build everything again, with a different initialisation
    resumed = _trainer(tmp_path, "part", init_seed=123, checkpoint_every=5)
    resumed.fit(resume=True)
    assert resumed.global_step == full.global_step == 15
    for key, value in resumed.unwrapped_model.state_dict().items():
        assert torch.equal(value, reference[key]), key

    # the metrics log holds each train step once, in order, as the uninterrupted run's
    def train_losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["split"] == "train"]

    assert train_losses("part") == train_losses("full")


def test_run_folder_contents(tmp_path):
    trainer = _trainer(tmp_path, "files", checkpoint_every=5)
    metrics = trainer.fit()
    run = tmp_path / "files"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["train"]["batch_size"] == 8 and config["config"]["model"] == "mlp"
    assert config["run"]["train"]["checkpoint_every"] == 5  # recorded, but not part of the compared settings
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["eval_loss"] > 0
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000010", "step_00000015"]  # keep_checkpoints=2, no partial folders left
    files = sorted(p.name for p in (run / "checkpoints" / "step_00000015").iterdir())
    assert files == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng_rank0.json",
        "rng_rank0.safetensors",
        "trainer_state.json",
    ]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "eval"] == [5, 10, 15]
    assert all(r["step"] == i + 1 for i, r in enumerate(r for r in records if r["split"] == "train"))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="name"):
        TrainConfig(name="../escape")


def test_resume_rejects_missing_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.json"):
        trainer.fit(resume=tmp_path / "nowhere")


def test_bf16_mixed_precision_run_trains(tmp_path):
    trainer = _trainer(tmp_path, "bf16", mixed_precision="bf16")
    first = None

    def remember(t, record):
        nonlocal first
        first = first if first is not None else record["loss"]

    trainer.callbacks.append(remember)
    metrics = trainer.fit()
    assert trainer.accelerator.mixed_precision == "bf16"
    assert metrics["eval_loss"] < first  # it learned something in 15 steps
