"""The reproduction's small ResNet: attention placement and parameter overheads (the trainings run in
`polyzoo reproduce`, not here)."""

import torch

from polyzoo.shared.ops.attention import ECA, SqueezeExcite
from polyzoo.vision.reproduction import SmallResNet


def test_small_resnet_attention_overheads():
    nets = {a: SmallResNet(10, 1, a) for a in ("none", "se", "eca")}
    params = {a: sum(p.numel() for p in n.parameters()) for a, n in nets.items()}
    # ECA: one kernel of 3 per block (ψ(16) = ψ(32) = ψ(64) = 3), three blocks
    assert params["eca"] - params["none"] == 9
    # SE r=16: 2·C·C/16 + C/16 + C per block, hidden max(C//16, 1)
    se = sum(2 * c * max(c // 16, 1) + max(c // 16, 1) + c for c in (16, 32, 64))
    assert params["se"] - params["none"] == se
    assert all(isinstance(b.se, ECA) for b in nets["eca"].layers)
    assert all(isinstance(b.se, SqueezeExcite) for b in nets["se"].layers)
    assert nets["eca"](torch.randn(2, 1, 16, 16)).shape == (2, 10)


def _fake_eca(monkeypatch, accs):
    """Replace the trainings of the ECA check by planted per-(attention, seed) accuracies."""
    from polyzoo.vision import reproduction as rep

    calls = []

    def fake_train(model, data, ctx, name, epochs, lr, seed):
        calls.append(name)
        attention = name.split("_")[1]
        return {"eval_top1": accs[attention][seed]}

    monkeypatch.setattr(rep, "_train", fake_train)
    return calls


def test_eca_check_verdict_follows_the_welch_rule(tmp_path, monkeypatch):
    from polyzoo.shared.report import ReproContext
    from polyzoo.vision.reproduction import QUICK_SEEDS, eca_vs_se_check

    ctx = ReproContext(out_dir=tmp_path / "report", quick=True, seed=0)
    se = [0.95, 0.95, 0.95]
    # ECA clearly better than none over three seeds: PASS
    calls = _fake_eca(monkeypatch, {"none": [0.90, 0.91, 0.90], "se": se, "eca": [0.95, 0.96, 0.955]})
    res = eca_vs_se_check(ctx)
    assert QUICK_SEEDS["eca"] == 3 and res.seeds == [0, 1, 2] and len(calls) == 9
    assert res.passed is True and "Welch" in res.verdict and "ECA adds 9 parameters" in res.verdict
    # the case: one point lower on one seed, the others level: within the spread, INCONCLUSIVE
    _fake_eca(monkeypatch, {"none": [0.97, 0.97, 0.975], "se": se, "eca": [0.959, 0.975, 0.97]})
    res = eca_vs_se_check(ctx)
    assert res.passed is None and res.status == "INCONCLUSIVE" and "within the seed spread" in res.verdict
    # clearly worse on every seed: FAIL
    _fake_eca(monkeypatch, {"none": [0.97, 0.971, 0.972], "se": se, "eca": [0.90, 0.91, 0.905]})
    assert eca_vs_se_check(ctx).passed is False
    # no temp folder: the runs live in the report folder, named relative to it
    assert "runs/vision" in res.notes[0] and (tmp_path / "report" / "runs" / "vision").is_dir()
    assert res.figures[0].parent == tmp_path / "report"


def test_emo_and_sot_quick_runs_are_one_seed_smoke_runs(tmp_path, monkeypatch):
    from polyzoo.shared.report import ReproContext
    from polyzoo.vision import reproduction as rep

    monkeypatch.setattr(rep, "_train", lambda model, data, ctx, name, epochs, lr, seed: {"eval_top1": 0.9})
    ctx = ReproContext(out_dir=tmp_path, quick=True, seed=4)
    for check in (rep.emo_vs_mobilenetv2_check, rep.sot_head_check):
        res = check(ctx)
        # one seed per arm: no spread, so the rule cannot decide (never a single-seed PASS/FAIL)
        assert res.seeds == [4] and res.passed is None
        assert "smoke run" in res.verdict and "no seed spread" in res.verdict
    full = ReproContext(out_dir=tmp_path, quick=False, seed=0)
    assert rep._seeds(full, "emo") == [0, 1, 2]
