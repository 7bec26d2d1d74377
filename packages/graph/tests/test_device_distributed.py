"""--precision, host synchronisation, NeighborLoader mini-batches and the two-process (torchrun, gloo) CLI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch_geometric.utils import k_hop_subgraph

import polyzoo.graph.training as training
from polyzoo.graph.cli import graph
from polyzoo.graph.models import build_model
from polyzoo.graph.training import DistillConfig, MiniBatch, TeacherConfig, distill, receptive_hops, train_teacher
from polyzoo.shared.io import load_safetensors


def _subgraph_logits(model, data, seeds, hops):
    """Own reference of an exact mini-batch: the seeds' in-neighbourhood of ``hops`` hops as PyG's k_hop_subgraph
    gives it (every edge among those nodes, seeds' outputs read at their positions)."""
    subset, ei, mapping, _ = k_hop_subgraph(seeds, hops, data.edge_index, relabel_nodes=True, flow="source_to_target")
    return model(data.x[subset], ei)[mapping]


@pytest.mark.parametrize(("name", "layers"), [("gcn", 2), ("sage", 2), ("gin", 2), ("sgc", 2), ("gcn", 3)])
def test_receptive_hops_give_full_graph_outputs(tiny_graph, name, layers):
    """With receptive_hops(model) hops of every neighbour a seed's output equals its full-graph output; one hop
    fewer does not for GCN/SGC (their normalisation reads the farthest nodes' degrees)."""
    torch.manual_seed(0)
    model = build_model(name, tiny_graph.num_features, 8, 2, layers, 0.0).eval()
    full = model(tiny_graph.x, tiny_graph.edge_index)
    seeds = torch.tensor([0, 5, 17, 60])
    hops = receptive_hops(name, layers)
    sub = training._Subgraphs(tiny_graph, [-1] * hops, torch.device("cpu"), "torch")
    x, ei, n_id = sub(seeds)
    assert torch.equal(n_id[: len(seeds)], seeds)  # seeds first
    got = model(x, ei)[: len(seeds)]
    torch.testing.assert_close(got, full[seeds], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_subgraph_logits(model, tiny_graph, seeds, hops), full[seeds], rtol=1e-5, atol=1e-6)
    if name in ("gcn", "sgc"):
        short = training._Subgraphs(tiny_graph, [-1] * (hops - 1), torch.device("cpu"), "torch")
        x, ei, _ = short(seeds)
        assert (model(x, ei)[: len(seeds)] - full[seeds]).abs().max() > 1e-4


def test_precision_reaches_the_forward_pass_and_losses_stay_float32(tiny_graph, monkeypatch):
    seen = []
    real = training.build_model

    def recording(*args, **kwargs):
        m = real(*args, **kwargs)
        for sub in m.modules():  # the linear transforms (PyG's and torch's) are what autocast lowers
            if type(sub).__name__ == "Linear":
                sub.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        return m

    monkeypatch.setattr(training, "build_model", recording)
    t = train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=3), device="cpu", precision="bf16")
    assert set(seen) == {torch.bfloat16} and t.logits.dtype == torch.float32
    seen.clear()
    d = distill(tiny_graph, t.logits, DistillConfig(hidden=8, epochs=3, student="gcn"), device="cpu", precision="bf16")
    assert set(seen) == {torch.bfloat16} and d.logits.dtype == torch.float32
    assert d.proxy.weight.dtype == torch.float32 and all(isinstance(h["kd"], float) for h in d.history)
    seen.clear()
    train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=2), device="cpu")
    assert set(seen) == {torch.float32}
    with pytest.raises(ValueError, match="precision"):
        train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=2), device="cpu", precision="fp8")


def test_cli_precision_and_minibatch_options_reach_the_run(tmp_path):
    runner = CliRunner()
    common = ["--nodes", "100", "--epochs", "4", "--hidden", "8", "--device", "cpu"]
    t = tmp_path / "t"
    r = runner.invoke(graph, ["teacher", *common, "--precision", "bf16", "--run-dir", str(t)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((t / "config.json").read_text())
    assert cfg["config"]["precision"] == "bf16" and "minibatch" not in cfg["config"]
    s = tmp_path / "s"
    d_common = ["--epochs", "4", "--hidden", "8", "--device", "cpu"]
    args = ["distill", "--teacher", str(t), *d_common, "--batch-size", "16", "--num-neighbors", "3,2", "--run-dir"]
    r = runner.invoke(graph, [*args, str(s), "--precision", "fp16"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((s / "config.json").read_text())["config"]
    assert cfg["precision"] == "fp16"
    assert cfg["minibatch"] == {"batch_size": 16, "num_neighbors": [3, 2], "backend": "auto", "processes": 1}
    r = runner.invoke(graph, ["eval", str(t), str(s), "--precision", "bf16", "--device", "cpu", "--format", "json"])
    assert r.exit_code == 0, r.output
    # an fp32 run keeps the config it always had (no precision key): runs made before the option still resume
    r = runner.invoke(graph, ["teacher", *common, "--run-dir", str(tmp_path / "f")])
    assert r.exit_code == 0 and "precision" not in json.loads((tmp_path / "f" / "config.json").read_text())["config"]
    r = runner.invoke(graph, [*args, str(tmp_path / "x"), "--num-neighbors", "3,a"])
    assert r.exit_code == 2 and "--num-neighbors" in r.output


@pytest.mark.parametrize("patience", [3, 100])
def test_deferred_host_reads_give_the_epoch_by_epoch_result(tiny_graph, monkeypatch, patience):
    """The CUDA loop (read back every few epochs, rule on the device) must give the CPU loop's result exactly,
    also when early stopping fires inside a block."""
    tcfg = TeacherConfig(hidden=8, epochs=23, patience=patience, seed=1)
    dcfg = DistillConfig(student="gcn", hidden=8, epochs=17, patience=patience, fair="sp", alpha=10.0)
    ref_t = train_teacher(tiny_graph, tcfg, device="cpu")
    ref_d = distill(tiny_graph, ref_t.logits, dcfg, device="cpu")
    monkeypatch.setattr(training, "_sync_every", lambda group, log_every: 4)
    got_t = train_teacher(tiny_graph, tcfg, device="cpu")
    got_d = distill(tiny_graph, ref_t.logits, dcfg, device="cpu")
    for ref, got in ((ref_t, got_t), (ref_d, got_d)):
        assert (got.best_epoch, got.epochs_run, got.best_val_acc) == (ref.best_epoch, ref.epochs_run, ref.best_val_acc)
        assert got.history == ref.history
        torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)
    if patience == 3:
        assert ref_t.epochs_run < 23 and ref_t.epochs_run % 4 != 0  # the stop fell inside a block


def test_deferred_reads_resume_exactly(tiny_graph, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "_sync_every", lambda group, log_every: 3)
    cfg = TeacherConfig(hidden=8, epochs=11, patience=100, seed=3)
    full = train_teacher(tiny_graph, cfg, tmp_path / "a", checkpoint_every=4)
    train_teacher(tiny_graph, cfg, tmp_path / "b", checkpoint_every=4, stop_after=6)
    resumed = train_teacher(tiny_graph, cfg, tmp_path / "b", checkpoint_every=4)
    torch.testing.assert_close(resumed.logits, full.logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("fair", "student", "kd"), [("sp", "mlp", "euclidean"), ("eo", "gcn", "kl"), ("none", "sgc", "euclidean")]
)
def test_one_step_minibatches_compute_the_full_batch_run(tiny_graph, fair, student, kd):
    """Without dropout and with all seeds in one step, the mini-batch path (exact subgraphs, global losses from
    summed shares) is the full-batch run up to float summation order (measured max |Δ| 4e-7)."""
    t = train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=10, patience=100, dropout=0.0), device="cpu")
    tm = train_teacher(
        tiny_graph, TeacherConfig(hidden=8, epochs=10, patience=100, dropout=0.0), device="cpu", minibatch=MiniBatch()
    )
    torch.testing.assert_close(tm.logits, t.logits, rtol=0, atol=1e-5)
    cfg = DistillConfig(hidden=8, epochs=10, patience=100, fair=fair, alpha=10.0, student=student, dropout=0.0, kd=kd)
    d = distill(tiny_graph, t.logits, cfg, device="cpu")
    dm = distill(tiny_graph, t.logits, cfg, device="cpu", minibatch=MiniBatch())
    torch.testing.assert_close(dm.logits, d.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(dm.proxy.weight, d.proxy.weight, rtol=0, atol=1e-5)
    assert [h["val_acc"] for h in dm.history] == [h["val_acc"] for h in d.history]
    for a, b in zip(dm.history, d.history, strict=True):
        assert set(a) == set(b) and all(abs(a[k] - b[k]) < 1e-5 for k in a)


def test_small_sampled_minibatches_train_and_predict_every_node(tiny_graph):
    t = train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=3), device="cpu")
    res = distill(
        tiny_graph,
        t.logits,
        DistillConfig(hidden=8, epochs=3, student="gcn", fair="sp", alpha=10.0),
        device="cpu",
        minibatch=MiniBatch(batch_size=16, num_neighbors=[3, 3]),
    )
    assert res.logits.shape == (tiny_graph.num_nodes, 2) and bool(torch.isfinite(res.logits).all())
    # evaluation ran on exact subgraphs: the logits are the full-graph outputs of the returned student
    res.model.eval()
    with torch.no_grad():
        full = res.model(torch.cat([tiny_graph.x, res.proxy.weight], 1), tiny_graph.edge_index)
    torch.testing.assert_close(res.logits, full, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- two processes (gloo)
ARGS = ["--nodes", "120", "--graph-seed", "3", "--hidden", "8", "--dropout", "0", "--device", "cpu", "--patience", "50"]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "polyzoo.shared.cli", "graph", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _run(path):
    res = json.loads((path / "result.json").read_text())
    hist = [json.loads(ln) for ln in (path / "metrics.jsonl").read_text().splitlines()]
    return res, hist, load_safetensors(path / "logits.safetensors")["logits"]


@pytest.mark.slow
def test_two_process_teacher_and_distill_equal_the_one_process_full_batch_run(tmp_path):
    """`graph teacher` and `graph distill` under torchrun (2 CPU processes, gloo) train on disjoint halves of every
    step's seeds and gather every node's prediction once. Without dropout they compute the one-process full-batch
    run's gradients; what differs is float summation order (the all-reduce adds the two shares; subgraph scatters
    add neighbours in another order), about 1e-7 relative per operation. Over these 12 Adam steps that is measured
    at < 1e-6 on the logits, so they are compared within 1e-5, and everything decided by comparisons (validation
    accuracies, best epoch, predictions) must be identical."""
    runner = CliRunner()
    one_t, two_t = tmp_path / "t1", tmp_path / "t2"
    r = runner.invoke(graph, ["teacher", *ARGS, "--epochs", "12", "--run-dir", str(one_t)])
    assert r.exit_code == 0, r.output
    p = _torchrun("teacher", *ARGS, "--epochs", "12", "--run-dir", str(two_t))
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((two_t / "config.json").read_text())
    assert cfg["config"]["minibatch"]["processes"] == 2 and cfg["run"]["processes"] == 2
    (r1, h1, l1), (r2, h2, l2) = _run(one_t), _run(two_t)
    assert l2.shape == l1.shape == (120, 2)
    torch.testing.assert_close(l2, l1, rtol=0, atol=1e-5)
    assert torch.equal(l2.argmax(1), l1.argmax(1))
    assert [h["val_acc"] for h in h2] == [h["val_acc"] for h in h1]
    assert r2["best_epoch"] == r1["best_epoch"] and r2["metrics"]["acc"] == r1["metrics"]["acc"]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2, strict=True)) < 1e-5

    d_args = ["--teacher", str(one_t), "--student", "gcn", "--fair", "sp", "--alpha", "10", "--epochs", "10"]
    d_args += ["--hidden", "8", "--dropout", "0", "--device", "cpu", "--patience", "50"]
    one_d, two_d = tmp_path / "d1", tmp_path / "d2"
    r = runner.invoke(graph, ["distill", *d_args, "--run-dir", str(one_d)])
    assert r.exit_code == 0, r.output
    p = _torchrun("distill", *d_args, "--run-dir", str(two_d))
    assert p.returncode == 0, p.stderr[-3000:]
    (r1, h1, l1), (r2, h2, l2) = _run(one_d), _run(two_d)
    torch.testing.assert_close(l2, l1, rtol=0, atol=1e-5)
    assert torch.equal(l2.argmax(1), l1.argmax(1))
    assert [h["val_acc"] for h in h2] == [h["val_acc"] for h in h1]
    for key in ("kd", "bias", "proxy_bias"):
        assert max(abs(a[key] - b[key]) for a, b in zip(h1, h2, strict=True)) < 1e-4
    w1, w2 = load_safetensors(one_d / "model.safetensors"), load_safetensors(two_d / "model.safetensors")
    torch.testing.assert_close(w2["proxy.weight"], w1["proxy.weight"], rtol=0, atol=1e-5)


def test_deferred_host_reads_with_minibatches_draw_each_epoch_anew(tiny_graph, monkeypatch):
    """Inside a read-back block every epoch must still get its own seed order and dropout (seeded by epoch)."""
    cfg = DistillConfig(student="gcn", hidden=8, epochs=9, patience=100, fair="sp", alpha=10.0)
    t = train_teacher(tiny_graph, TeacherConfig(hidden=8, epochs=3), device="cpu")
    mb = MiniBatch(batch_size=24, num_neighbors=[4, 4])
    ref = distill(tiny_graph, t.logits, cfg, device="cpu", minibatch=mb)
    monkeypatch.setattr(training, "_sync_every", lambda group, log_every: 4)
    got = distill(tiny_graph, t.logits, cfg, device="cpu", minibatch=mb)
    assert got.history == ref.history
    torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)
    assert len({h["kd"] for h in ref.history}) == len(ref.history)
