"""Defenses (Neural Cleanse, STRIP, fine-pruning) and the `polyzoo security` commands."""

import json

import torch
from click.testing import CliRunner
from torch import nn

from polyzoo.security.attacks import naive_trigger
from polyzoo.security.defenses import (
    DefenseConfig,
    DefenseData,
    anomaly_index,
    fine_pruning,
    neural_cleanse,
    strip,
    strip_entropy,
)
from polyzoo.security.evaluate import EvalConfig, train_network


def test_anomaly_index_flags_small_outlier():
    norms = torch.tensor([10.0, 11.0, 9.0, 10.5, 9.5, 1.0])
    idx = anomaly_index(norms)
    med = norms.median()
    mad = 1.4826 * (norms - med).abs().median()
    assert torch.isclose(idx[5], (med - 1.0) / mad) and idx[5] > 2
    assert (idx[:5] < 2).all()


class _Const(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_strip_entropy_values():
    pool = torch.randn(10, 1, 4, 4)
    x = torch.randn(3, 1, 4, 4)
    confident = strip_entropy(_Const(torch.tensor([[100.0, 0.0, 0.0]])), x, pool, n=4)
    uniform = strip_entropy(_Const(torch.zeros(1, 3)), x, pool, n=4)
    assert torch.allclose(confident, torch.zeros(3), atol=1e-6)
    assert torch.allclose(uniform, torch.full((3,), float(torch.log(torch.tensor(3.0)))))


def _backdoored(digits):
    """A tiny network trained on real digits where 20% carry the BadNets patch relabelled to 0."""
    trig, mask = naive_trigger(1, 8, 8, digits.mean, digits.std, size=2)
    x, y = digits.train_x[:600].clone(), digits.train_y[:600].clone()
    x[:120] = x[:120] * (1 - mask) + mask * trig
    y[:120] = 0
    net = train_network(x, y, 10, EvalConfig(width=16, norm="instancenorm", epochs=40, batch_size=128), seed=0)
    d = DefenseData(
        digits.train_x[600:900],
        digits.train_y[600:900],
        digits.test_x,
        digits.test_y,
        trig,
        mask,
        0,
        10,
        digits.mean,
        digits.std,
    )
    return net, d


def test_defenses_report_before_and_after(digits):
    net, d = _backdoored(digits)
    cfg = DefenseConfig(nc_steps=40, unlearn_epochs=2, finetune_epochs=2, strip_n=8)
    s = strip(net, d, cfg)
    assert s["before"]["asr_all"] > 0.5  # the backdoor is planted
    assert s["after"]["asr_all"] <= s["before"]["asr_all"] and s["after"]["cta"] <= s["before"]["cta"]
    assert 0 <= s["frr"] <= 0.2
    fp = fine_pruning(net, d, cfg)
    assert 0 < fp["pruned_channels"] < fp["channels"] == 16
    assert set(fp["after"]) == {"cta", "asr_all", "asr_nontarget"}
    # directional, seed 0 (measured 0.994 → 0.957 after pruning 3 channels → 0.835 after 2 fine-tuning epochs): the
    # pruning alone lowers the ASR, and pruning + fine-tuning clearly; a fine-pruning that prunes nothing and
    # fine-tunes nothing leaves 0.994 and fails both
    assert fp["after_prune"]["asr_all"] < fp["before"]["asr_all"] - 0.02
    assert fp["after"]["asr_all"] < fp["before"]["asr_all"] - 0.1
    assert fp["after"]["cta"] > fp["before"]["cta"] - 0.1  # within the 4-point pruning budget plus fine-tuning
    nc = neural_cleanse(net, d, cfg)
    assert len(nc["anomaly_index"]) == 10 and nc["before"] == s["before"]
    # the target's reversed mask is the smallest: the patch is the cheapest way into class 0
    assert min(range(10), key=lambda t: nc["mask_l1"][t]) == 0


def test_cli_distill_evaluate_defend_resume(tmp_path):
    from polyzoo.security.cli import security

    out = tmp_path / "run"
    runner = CliRunner()
    args = [
        "distill",
        "--dataset",
        "digits",
        "--method",
        "dm",
        "--attack",
        "doorping",
        "--ipc",
        "1",
        "--width",
        "8",
        "--norm",
        "instancenorm",
        "--batch-real",
        "32",
        "--portion",
        "0.05",
        "--checkpoint-every",
        "2",
        "--iterations",
        "3",
        "--run-dir",
        str(out),
    ]
    res = runner.invoke(security, args)
    assert res.exit_code == 0, res.output
    assert (out / "synset.safetensors").is_file() and (out / "checkpoint.safetensors").is_file()
    from polyzoo.security.distill import load_synset
    from polyzoo.security.files import read_state

    full = load_synset(out / "synset.safetensors")
    assert read_state(out / "checkpoint.safetensors", "distillation checkpoint")["iteration"] == 3
    again = runner.invoke(security, args)  # the same settings: the finished run is resumed and kept
    assert again.exit_code == 0, again.output
    assert load_synset(out / "synset.safetensors").history == full.history
    before = (out / "config.json").read_bytes()
    refused = runner.invoke(security, [*args[:-3], "4", "--run-dir", str(out)])  # 3 → 4 iterations: refused
    assert refused.exit_code == 1 and "distill.iterations (3 → 4)" in refused.output, refused.output
    assert (out / "config.json").read_bytes() == before
    s = full
    assert [h["iteration"] for h in s.history] == [1, 2, 3]
    res = runner.invoke(
        security, ["eval", "--synset", str(out / "synset.safetensors"), "--num-eval", "1", "--epochs", "2"]
    )
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "evaluation.json").read_text())
    assert set(ev["summary"]) == {"cta", "asr_all", "asr_nontarget"}
    res = runner.invoke(
        security,
        [
            "defend",
            "--synset",
            str(out / "synset.safetensors"),
            "--defense",
            "strip",
            "--epochs",
            "2",
            "--clean-size",
            "60",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "strip" in json.loads((out / "defense.json").read_text())["defenses"]
    bad = runner.invoke(security, ["distill", "--dataset", "nope", "--run-dir", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "unknown dataset" in bad.output and "Traceback" not in bad.output
