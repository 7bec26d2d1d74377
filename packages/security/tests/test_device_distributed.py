"""--device/--precision in distillation and evaluation, and the two-process (torchrun, gloo) CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import polyzoo.security.distill as distill_mod
import polyzoo.security.evaluate as evaluate_mod
from polyzoo.security.attacks import AttackConfig
from polyzoo.security.cli import security
from polyzoo.security.distill import DistillConfig, Distiller, load_synset
from polyzoo.security.evaluate import EvalConfig, Precision, train_network

TINY = {"width": 8, "norm": "instancenorm", "batch_real": 32}


def _recording(monkeypatch, module, seen):
    real = module.get_network

    def build(*args, **kwargs):
        net = real(*args, **kwargs)
        for sub in net.modules():
            if isinstance(sub, nn.Linear | nn.Conv2d):
                sub.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        return net

    monkeypatch.setattr(module, "get_network", build)


@pytest.mark.parametrize("method", ["dm", "dc"])
def test_precision_reaches_the_networks_and_the_images_stay_float32(digits, monkeypatch, method):
    seen: list[torch.dtype] = []
    _recording(monkeypatch, distill_mod, seen)
    atk = AttackConfig(kind="doorping", portion=0.05, trigger_steps=5)
    cfg = DistillConfig(method=method, ipc=1, iterations=2, outer_loop=2, inner_loop=1, attack=atk, **TINY)
    s = Distiller(digits, cfg, device="cpu", precision="bf16").run(progress=False)
    assert torch.bfloat16 in seen
    assert s.images.dtype == torch.float32 and s.trigger.dtype == torch.float32
    assert all(isinstance(h["loss"], float) and h["loss"] == h["loss"] for h in s.history)
    seen.clear()
    Distiller(digits, cfg, device="cpu").run(progress=False)
    assert set(seen) == {torch.float32}


def test_train_network_precision_and_fp16_scaling(digits, monkeypatch):
    seen: list[torch.dtype] = []
    _recording(monkeypatch, evaluate_mod, seen)
    x, y = digits.train_x[:40], digits.train_y[:40]
    cfg = EvalConfig(width=8, norm="instancenorm", epochs=2, batch_size=16)
    net = train_network(x, y, 10, cfg, device="cpu", precision="bf16")
    assert torch.bfloat16 in seen and all(p.dtype == torch.float32 for p in net.parameters())
    net = train_network(x, y, 10, cfg, device="cpu", precision="fp16")
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    with pytest.raises(ValueError, match="precision"):
        Precision("fp8")


def test_cli_device_and_precision_reach_the_runs(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["distill", "--method", "dm", "--ipc", "1", "--width", "8", "--norm", "instancenorm", "--batch-real", "16"]
    args += ["--iterations", "2", "--device", "cpu", "--run-dir", str(out)]
    r = runner.invoke(security, [*args, "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["distill"]["precision"] == "bf16" and cfg["run"] == {"device": "cpu", "processes": 1}
    r = runner.invoke(security, [*args, "--precision", "fp32"])  # fp32 keeps the config it always had: refused
    assert r.exit_code == 1 and "distill.precision" in r.output
    syn = out / "synset.safetensors"
    ev = ["eval", "--synset", str(syn), "--num-eval", "1", "--epochs", "1", "--device", "cpu", "--format", "json"]
    r = runner.invoke(security, [*ev, "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["settings"]["precision"] == "bf16" and len(saved["runs"]) == 1


# --------------------------------------------------------------------------------------- two processes (gloo)
def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "polyzoo.shared.cli", "security", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method_args",
    [
        ["--method", "dm", "--attack", "doorping", "--iterations", "3"],
        ["--method", "dsa", "--attack", "naive", "--iterations", "2", "--outer-loop", "2", "--inner-loop", "1"],
    ],
    ids=["dm-doorping", "dsa-naive"],
)
def test_two_process_distill_and_eval_equal_one_process(tmp_path, method_args):
    """Under torchrun (2 CPU processes, gloo) each process computes the matching terms of half the classes and the
    images' gradients are summed; a class's term touches only its own images, so the sum adds exact zeros and the
    synthetic set must be bit-for-bit the one-process one. The logged loss is the sum of the processes' class
    sums (another addition order), so it may differ in the last float32 bits. `eval` gives network i to process
    i mod 2 with seed i, so every network's metrics are those of the one-process evaluation, each exactly once."""
    common = [*method_args, "--ipc", "1", "--width", "8", "--norm", "instancenorm", "--batch-real", "32"]
    common += ["--portion", "0.05", "--device", "cpu", "--checkpoint-every", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    r = CliRunner().invoke(security, ["distill", *common, "--run-dir", str(one)])
    assert r.exit_code == 0, r.output
    p = _torchrun("distill", *common, "--run-dir", str(two))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((two / "config.json").read_text())["run"]["processes"] == 2
    s1, s2 = load_synset(one / "synset.safetensors"), load_synset(two / "synset.safetensors")
    assert torch.equal(s1.images, s2.images) and torch.equal(s1.trigger, s2.trigger)
    assert not torch.equal(s1.images, torch.zeros_like(s1.images))
    assert [h["iteration"] for h in s2.history] == [h["iteration"] for h in s1.history]
    for a, b in zip(s1.history, s2.history, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6 * max(1.0, abs(a["loss"]))

    if "dm" not in method_args:
        return
    ev = ["--num-eval", "3", "--epochs", "2", "--device", "cpu", "--format", "json"]
    r = CliRunner().invoke(security, ["eval", "--synset", str(one / "synset.safetensors"), *ev])
    assert r.exit_code == 0, r.output
    p = _torchrun("eval", "--synset", str(two / "synset.safetensors"), *ev)
    assert p.returncode == 0, p.stderr[-3000:]
    e1 = json.loads((one / "evaluation.json").read_text())
    e2 = json.loads((two / "evaluation.json").read_text())
    assert len(e2["runs"]) == 3 and e2["runs"] == e1["runs"] and e2["summary"] == e1["summary"]


def _official_update(net, module, trigger, mask, neuron, alpha, steps, threshold=0.5):
    """Own transcription of baadd's ``update_trigger``: Adam on the trigger, the hook's output of ``module``,
    MSE to alpha × the first reading, ``loss.item() < threshold`` checked before every step, masked gradient."""
    net.eval()
    trig = trigger.detach().clone().unsqueeze(0).requires_grad_()
    opt = torch.optim.Adam([trig], lr=0.08, betas=[0.9, 0.99])
    held, first, taken = {}, None, 0
    handle = module.register_forward_hook(lambda _m, _i, out: held.update(out=out))
    try:
        for i in range(steps):
            opt.zero_grad()
            net(trig)
            out = held["out"][:, [neuron]]
            first = out.detach() if i == 0 else first
            loss = torch.nn.functional.mse_loss(out, alpha * first)
            if loss.item() < threshold:
                break
            loss.backward()
            trig.grad.data.mul_(mask)
            opt.step()
            taken += 1
    finally:
        handle.remove()
    return trig.detach()[0], taken


@pytest.mark.parametrize("check_every", [1, 3, 4, 100])
def test_trigger_update_reads_back_every_few_steps_with_the_official_result(check_every):
    """The early-stopping rule evaluated on the device and read back every ``check_every`` steps: the steps taken
    after it fired are undone, so the trigger and the step count are the official ones (here it fires mid-block)."""
    from polyzoo.security.attacks import doorping_trigger, update_trigger

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    trig, mask = doorping_trigger(1, 4, 4, (0.5,), (0.25,), size=2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net[1].weight.uniform_(-0.1, 0.1)
        net[1].weight[2] = 0.5  # the selected neuron (largest Σ|W|)
        net[1].bias.zero_()
        net[1].bias[2] = 3.0 - 0.5 * float(trig.sum())  # starting activation 3: alpha 1.5 sets the target 4.5
    ref, taken = _official_update(net, net[1], trig, mask, 2, alpha=1.5, steps=40)
    # the rule fires at step 6 (0-based), inside a read-back block for check_every 3, 4 and 100 (steps computed
    # after it and undone)
    assert taken == 6
    cfg = AttackConfig(kind="doorping", alpha=1.5, trigger_steps=40)
    new, info = update_trigger(net, trig, mask, cfg, check_every=check_every)
    assert torch.equal(new, ref) and info.steps == taken and info.loss < 0.5
