"""`polyzoo music finetune --device/--precision/--workers` become transformers' own TrainingArguments (``use_cpu``,
``bf16``/``fp16``, loader workers and pinned memory), and ``cuda:N`` is refused under several processes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from polyzoo.music import lm
from polyzoo.music.cli import music
from polyzoo.music.dataset import make_example, write_jsonl
from polyzoo.music.lm import LMTrainConfig, _training_arguments, select_device


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("precision", "bf16", "fp16"), [("fp32", False, False), ("bf16", True, False)])
def test_finetune_options_reach_training_arguments(tmp_path, monkeypatch, precision, bf16, fp16):
    seen: dict = {}

    def arguments(out_dir, cfg):
        seen["args"] = _training_arguments(out_dir, cfg)
        raise _Stop  # what the Trainer gets is known: no need to train

    monkeypatch.setattr(lm, "_training_arguments", arguments)
    write_jsonl([make_example(["o-----"] * 256, "g")], tmp_path / "train.jsonl")
    args = ["finetune", "--train", str(tmp_path / "train.jsonl"), "--from-scratch", "--run-dir", str(tmp_path / "r")]
    res = CliRunner().invoke(music, [*args, "--device", "cpu", "--precision", precision, "--workers", "3"])
    assert isinstance(res.exception, _Stop) or "_Stop" in res.output
    args = seen["args"]
    assert args.use_cpu is True and args.bf16 is bf16 and args.fp16 is fp16
    assert args.dataloader_num_workers == 3 and args.dataloader_pin_memory is False


def test_cpu_defaults_and_refusals(tmp_path, monkeypatch):
    args = _training_arguments(tmp_path, LMTrainConfig(device="cpu", precision="fp16"))
    assert args.use_cpu and args.fp16 and args.dataloader_num_workers == 0  # no workers on the CPU by default
    with pytest.raises(ValueError, match="precision"):
        _training_arguments(tmp_path, LMTrainConfig(device="cpu", precision="fp8"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        select_device("cuda:1")
