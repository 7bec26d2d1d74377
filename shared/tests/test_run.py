"""The run contract: config check before writing, resume from the last complete checkpoint, partial checkpoints
ignored and cleaned, output checks before work, exact resume with random augmentation and loader workers."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from polyzoo.shared.engine import TrainConfig, Trainer
from polyzoo.shared.io import write_json_atomic
from polyzoo.shared.run import ConfigMismatchError, RunDir, RunError, check_output_dir, config_diff
from polyzoo.shared.seed import SeededSamples


def test_config_diff_names_nested_keys():
    old = {"train": {"lr": 0.1, "epochs": 3}, "model": "a"}
    new = {"train": {"lr": 0.2, "epochs": 3}, "model": "a", "data": "x"}
    assert config_diff(old, new) == ["data", "train.lr"]
    assert config_diff(old, old) == []


def test_new_run_then_same_config_resumes(tmp_path):
    run = RunDir(tmp_path / "r", {"lr": 0.1}).open()
    assert run.checkpoint is None
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["config"] == {"lr": 0.1}
    run.save_checkpoint(3, lambda d: (d / "w.txt").write_text("3"))
    run.save_checkpoint(5, lambda d: (d / "w.txt").write_text("5"))
    again = RunDir(tmp_path / "r", {"lr": 0.1}).open()
    assert again.checkpoint.name == "step_00000005"


def test_other_config_refused_before_anything_is_written(tmp_path):
    RunDir(tmp_path / "r", {"lr": 0.1, "seed": 0}).open()
    before = (tmp_path / "r" / "config.json").read_bytes()
    mtime = (tmp_path / "r" / "config.json").stat().st_mtime_ns
    with pytest.raises(ConfigMismatchError) as err:
        RunDir(tmp_path / "r", {"lr": 0.2, "seed": 0}).open()
    assert err.value.keys == ["lr"]
    assert "lr (0.1 → 0.2)" in str(err.value) and "--overwrite" in str(err.value)
    assert str(tmp_path / "r" / "config.json") in str(err.value)
    assert (tmp_path / "r" / "config.json").read_bytes() == before
    assert (tmp_path / "r" / "config.json").stat().st_mtime_ns == mtime


def test_overwrite_starts_again(tmp_path):
    run = RunDir(tmp_path / "r", {"lr": 0.1}).open()
    run.save_checkpoint(1, lambda d: (d / "w.txt").write_text("1"))
    run.log_metrics({"step": 1, "loss": 1.0})
    (tmp_path / "r" / "notes.txt").write_text("mine")  # not a run file: left alone
    fresh = RunDir(tmp_path / "r", {"lr": 0.2}, overwrite=True).open()
    assert fresh.checkpoint is None and fresh.last_checkpoint() is None
    assert not fresh.metrics_path.exists()
    assert json.loads(fresh.config_path.read_text())["config"] == {"lr": 0.2}
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"


def test_no_resume_on_a_run_with_checkpoints_needs_overwrite(tmp_path):
    run = RunDir(tmp_path / "r", {"lr": 0.1}).open()
    run.save_checkpoint(1, lambda d: (d / "w.txt").write_text("1"))
    with pytest.raises(RunError, match="--overwrite"):
        RunDir(tmp_path / "r", {"lr": 0.1}, resume=False).open()
    assert RunDir(tmp_path / "r", {"lr": 0.1}, resume=False, overwrite=True).open().last_checkpoint() is None


def test_partial_checkpoints_ignored_and_cleaned(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1}).open()
    run.save_checkpoint(2, lambda d: (d / "w.txt").write_text("2"))
    partial = run.partial_checkpoint_path(4)
    partial.mkdir()
    (partial / "w.txt").write_text("half")

    def dies(folder):
        (folder / "w.txt").write_text("6")
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(6, dies)
    again = RunDir(tmp_path / "r", {"a": 1}).open()
    assert again.checkpoint.name == "step_00000002"
    assert sorted(p.name for p in again.checkpoints_dir.iterdir()) == ["step_00000002"]


def test_output_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunError, match="is a file"):
        check_output_dir(f)
    with pytest.raises(RunError, match="is a file"):
        check_output_dir(f / "sub")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(RunError, match="not writable"):
            check_output_dir(ro / "run")
    with pytest.raises(RunError, match="is a file"):
        RunDir(f, {"a": 1}).open()


def test_foreign_or_broken_config_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: line 1"):
        RunDir(tmp_path / "r", {"a": 1}).open()
    write_json_atomic(tmp_path / "r" / "config.json", {"something": "else"})
    with pytest.raises(RunError, match="not a polyzoo run config"):
        RunDir(tmp_path / "r", {"a": 1}).open()
    assert RunDir(tmp_path / "r", {"a": 1}, overwrite=True).open().config == {"a": 1}


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = RunDir(tmp_path / "r", {"a": 1}).open()
        ckpt = run.save_checkpoint(1, lambda d: (d / "w.txt").write_text("1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.config_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755


# --- exact resume with random augmentation and loader workers ---------------------------------------------------


class _AugmentedImages(Dataset):
    """Random crops and flips drawn from torch's global RNG, as torchvision transforms do."""

    def __init__(self, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 10, 10, generator=g)
        self.y = (self.x.mean(dim=(1, 2, 3)) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        top, left = torch.randint(0, 3, (2,)).tolist()
        img = self.x[i, :, top : top + 8, left : left + 8]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def test_seeded_samples_do_not_touch_the_global_rng():
    ds = SeededSamples(_AugmentedImages(), seed=1)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = ds[3][0]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ds[3][0], a)  # a pure function of (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], a)


def _aug_trainer(tmp_path, name, workers, init_seed=0, **cfg):
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    settings = {"epochs": 2, "batch_size": 5, "seed": 7, "progress": False, "device": "cpu", **cfg}
    config = TrainConfig(run_dir=str(tmp_path / name), num_workers=workers, **settings)
    return Trainer(model, opt, _AugmentedImages(), config, loss_fn=nn.functional.cross_entropy)


class _Kill(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_mid_epoch_with_augmentation_resumes_bit_identical(tmp_path, workers):
    full = _aug_trainer(tmp_path, "full", workers)
    full.fit()
    ref = {k: v.clone() for k, v in full.unwrapped_model.state_dict().items()}

    part = _aug_trainer(tmp_path, "part", workers, checkpoint_every=3)

    def kill(trainer, record):
        if trainer.global_step == 4:  # mid-epoch (5 batches per epoch), one step after a checkpoint
            raise _Kill

    part.callbacks.append(kill)
    with pytest.raises(_Kill):
        part.fit()
    resumed = _aug_trainer(tmp_path, "part", workers, init_seed=99, checkpoint_every=3)
    resumed.fit()
    assert resumed.global_step == full.global_step == 10
    for k, v in resumed.unwrapped_model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_trainer_refuses_changed_config(tmp_path):
    _aug_trainer(tmp_path, "r", 0).fit()
    with pytest.raises(ConfigMismatchError, match=r"train\.batch_size"):
        _aug_trainer(tmp_path, "r", 0, batch_size=4).fit()


def test_tensorboard_tracker_writes_events_offline(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    trainer = _aug_trainer(tmp_path, "tb", 0, log_with="tensorboard", log_every=1)
    trainer.fit()
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file was written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, 11))  # every optimizer step of the 2 epochs
    config = json.loads((tmp_path / "tb" / "config.json").read_text())
    assert config["run"]["train"]["log_with"] == "tensorboard"  # recorded, not compared


def test_seeded_samples_also_seed_batched_fetches_of_a_subset():
    """torch's Subset has __getitems__, which the DataLoader calls instead of __getitem__: the wrapper must not
    hand it through (it did, and random augmentation then escaped the per-sample seeds)."""
    from torch.utils.data import DataLoader, Subset

    ds = SeededSamples(Subset(_AugmentedImages(), list(range(12))), seed=4)
    first = [x for x, _ in DataLoader(ds, batch_size=4)]
    torch.manual_seed(123)  # another global state: the batches must not change
    again = [x for x, _ in DataLoader(ds, batch_size=4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(first[1][0], ds[4][0])
