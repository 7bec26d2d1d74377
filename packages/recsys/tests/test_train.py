"""The streaming training loop (resume equals a straight run), metrics, and the recsys commands end to end."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from polyzoo.recsys.cli import recsys
from polyzoo.recsys.data import CTRStream, build_feature_map
from polyzoo.recsys.synthetic import SyntheticConfig, generate_synthetic, synthetic_format, true_logits
from polyzoo.recsys.train import (
    MODELS,
    TrainSpec,
    build_model,
    build_optimizers,
    evaluate,
    fit,
    load_checkpoint_weights,
    metrics,
)


def _last_json(output: str) -> dict:
    return json.loads(output[output.rindex("{") :].strip())  # after the progress bar


@pytest.fixture
def synth(tmp_path):
    path = tmp_path / "synth.csv"
    cfg = SyntheticConfig(rows=1000, cardinality=4, seed=3)
    logit = generate_synthetic(path, cfg)
    return path, cfg, logit


def test_generator_is_documented_ground_truth(synth):
    path, cfg, logit = synth
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    x = np.array([[int(v[1:]) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(true_logits(x, cfg), logit)
    # the planted 3rd-order term: flipping one value of the triple changes the logit by s3·Δp·q·r
    assert len(rows) == cfg.rows and {r[0] for r in rows} <= {"0", "1"}


def test_metrics_match_definitions():
    m = metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.3]))
    assert m["auc"] == 1.0
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert abs(m["logloss"] - expected) < 1e-12


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_one_step(synth, model):
    path, _, _ = synth
    fmt = synthetic_format()
    fmap, _ = build_feature_map(path, fmt)
    spec = TrainSpec(
        model=model,
        embedding_dim=4,
        optimizer="gftrl" if model == "xdeepint" else "adam",
        model_kwargs={"num_layers": 2, "num_subspaces": 2} if model == "xdeepint" else {"hidden_units": (8,)},
        batch_size=512,
    )
    net = build_model(spec, fmap.num_rows, fmap.num_fields)
    out = fit(
        net, build_optimizers(net, spec), lambda line: CTRStream(path, fmt, fmap, 512, "train", start_line=line), spec
    )
    assert out["step"] == 2 and np.isfinite(out["loss"])
    res = evaluate(net, CTRStream(path, fmt, fmap, 1000, "test"))
    assert 0.0 <= res["auc"] <= 1.0 and res["rows"] == 199


def test_resume_equals_straight_run(synth, tmp_path):
    path, _, _ = synth
    fmt = synthetic_format()
    fmap, _ = build_feature_map(path, fmt, split=None)
    spec = TrainSpec(
        model="xdeepint",
        embedding_dim=4,
        model_kwargs={"num_layers": 2, "num_subspaces": 4},
        epochs=2,
        batch_size=256,
        checkpoint_every=1,
        gftrl_l1=0.01,
        gftrl_l2=0.01,
    )

    def stream(line):
        return CTRStream(path, fmt, fmap, 256, None, start_line=line)

    def make():
        torch.manual_seed(0)
        net = build_model(spec, fmap.num_rows, fmap.num_fields)
        return net, build_optimizers(net, spec)

    net_a, opt_a = make()
    fit(net_a, opt_a, stream, spec, tmp_path / "a")
    net_b, opt_b = make()
    assert fit(net_b, opt_b, stream, spec, tmp_path / "b", stop_after_steps=6)["step"] == 6  # stops mid-epoch 2
    net_c, opt_c = make()  # fresh process state, resumes from the checkpoint
    out = fit(net_c, opt_c, stream, spec, tmp_path / "b")
    assert out["step"] == 8 and out["epoch"] == 2
    for (name, a), c in zip(net_a.state_dict().items(), net_c.state_dict().values(), strict=True):
        torch.testing.assert_close(a, c, msg=name)


def test_commands_end_to_end(synth, tmp_path):
    path, _, _ = synth
    runner = CliRunner()
    fm = tmp_path / "fm.json"
    res = runner.invoke(
        recsys, ["prepare", str(path), "--data-format", "synthetic", "--threshold", "0", "--out", str(fm)]
    )
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    args = [
        "train",
        str(path),
        "--data-format",
        "synthetic",
        "--feature-map",
        str(fm),
        "--run-dir",
        str(run),
        "--embedding-dim",
        "4",
        "--layers",
        "2",
        "--subspaces",
        "2",
        "--batch-size",
        "512",
        "--checkpoint-every",
        "1",
        "--gftrl",
        "0.1",
        "1",
        "0.5",
        "0.1",
        "--format",
        "json",
    ]
    res = runner.invoke(recsys, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 2
    res = runner.invoke(recsys, args)  # resumes: the finished run does nothing more
    assert json.loads(res.stdout)["step"] == 2
    other = runner.invoke(recsys, [*args, "--batch-size", "256"])  # other settings: refused in one line
    assert other.exit_code == 1 and "train.batch_size (512 → 256)" in other.output
    res = runner.invoke(recsys, ["eval", str(run)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "eval.json").read_text())["rows"] == 199
    res = runner.invoke(recsys, ["select", str(run)])
    assert res.exit_code == 0, res.output
    sel = json.loads((run / "selection.json").read_text())
    zero = (load_checkpoint_weights(run)["embedding.weight"][1:] == 0).all(1)
    assert sel["embedding_zero_row_ratio"] == pytest.approx(float(zero.float().mean()))
    assert set(sel["fields"]) == {f"f{i}" for i in range(8)} and len(sel["pin_layers"]) == 2


def test_selection_report_counts_zero_rows_per_field():
    from polyzoo.recsys.cli import selection_report
    from polyzoo.recsys.features import FeatureMap, FieldSpec

    fmap = FeatureMap([FieldSpec("a", hash_buckets=3), FieldSpec("b", hash_buckets=2)])  # rows 1-3: a, 4-5: b
    spec = TrainSpec(model="xdeepint", embedding_dim=4, model_kwargs={"num_layers": 2, "num_subspaces": 2})
    net = build_model(spec, fmap.num_rows, fmap.num_fields)
    with torch.no_grad():
        net.embedding.weight[[2, 4, 5]] = 0.0
        net.pin.layers[1].weight[0, :3] = 0.0
    rep = selection_report(net, fmap)
    assert rep["fields"]["a"] == {"rows": 3, "zero_rows": 1, "zero_ratio": pytest.approx(1 / 3)}
    assert rep["fields"]["b"]["zero_rows"] == 2 and rep["embedding_zero_row_ratio"] == pytest.approx(3 / 5)
    assert rep["pin_layers"][0] == 0.0 and rep["pin_layers"][1] == pytest.approx(3 / 16)
    lr = build_model(TrainSpec(model="lr", optimizer="adam"), fmap.num_rows, fmap.num_fields)
    assert "pin_layers" not in selection_report(lr, fmap)
