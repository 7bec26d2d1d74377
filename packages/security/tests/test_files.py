"""Security run files are safetensors + JSON: nothing is unpickled, stale evaluations are recomputed."""

import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

from polyzoo.security.cli import security
from polyzoo.security.data import load_dataset
from polyzoo.security.distill import DistillConfig, Distiller, load_synset, save_synset
from polyzoo.security.files import file_sha256, read_state, write_state

TINY = {"width": 8, "norm": "instancenorm", "batch_real": 16, "outer_loop": 2, "inner_loop": 1}


class _Payload:
    """Unpickling this object creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _payload_file(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"images": _Payload(marker)}, f)


def test_state_roundtrip_keeps_tensors_and_json(tmp_path):
    opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.5)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"x": torch.arange(6.0).view(2, 3), "opt": opt.state_dict(), "cfg": {"a": [1, 2], "b": None}, "i": 4}
    write_state(tmp_path / "s.safetensors", state, "distillation checkpoint")
    back = read_state(tmp_path / "s.safetensors", "distillation checkpoint")
    assert torch.equal(back["x"], state["x"]) and back["cfg"] == state["cfg"] and back["i"] == 4
    assert torch.equal(back["opt"]["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match=r"s\.safetensors: not a synthetic set"):
        read_state(tmp_path / "s.safetensors", "synthetic set")


def test_payload_pickle_as_synset_never_runs_and_is_named(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "synset.pt"
    _payload_file(bad, marker)
    with pytest.raises(ValueError, match=r"synset\.pt: not a safetensors synthetic set.*pickle"):
        load_synset(bad)
    res = CliRunner().invoke(security, ["eval", "--synset", str(bad), "--num-eval", "1", "--epochs", "1"])
    assert res.exit_code == 1 and "synset.pt" in res.output and "Traceback" not in res.output
    assert not marker.exists()


def test_payload_pickle_as_old_checkpoint_never_runs_and_is_named(digits, tmp_path):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _payload_file(run_dir / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: a pickle-based file"):
        Distiller(digits, DistillConfig(method="dc", ipc=1, iterations=1, **TINY), run_dir=run_dir)
    # a payload under the new name is refused the same way (it is not safetensors)
    (run_dir / "checkpoint.pt").unlink()
    _payload_file(run_dir / "checkpoint.safetensors", marker)
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors: not a safetensors distillation checkpoint"):
        Distiller(digits, DistillConfig(method="dc", ipc=1, iterations=1, **TINY), run_dir=run_dir)
    assert not marker.exists()


def _evaluate(synset, *extra):
    res = CliRunner().invoke(security, ["eval", "--synset", str(synset), "--num-eval", "1", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(synset.with_name("evaluation.json").read_text())


def test_evaluation_is_recomputed_when_settings_or_synset_change(digits, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    s = Distiller(digits, DistillConfig(method="dc", ipc=1, iterations=1, **TINY), run_dir=run_dir).run(progress=False)
    synset = run_dir / "synset.safetensors"
    first = _evaluate(synset, "--epochs", "1")
    assert first["settings"]["eval"]["epochs"] == 1 and first["synset_sha256"] == file_sha256(synset)
    assert first["summary"]["cta"]["n"] == 1

    from polyzoo.security import evaluate as ev

    calls = []
    real = ev.train_network
    monkeypatch.setattr(ev, "train_network", lambda *a, **k: calls.append(a[3].epochs) or real(*a, **k))
    assert _evaluate(synset, "--epochs", "1")["runs"] == first["runs"] and calls == []  # same basis: reused
    second = _evaluate(synset, "--epochs", "2")  # other epochs: recomputed
    assert calls == [2] and second["settings"]["eval"]["epochs"] == 2
    _evaluate(synset, "--epochs", "2", "--model", "convnet-linear")  # other model: recomputed
    assert calls == [2, 2]
    # the set distilled again (other images, same name): recomputed
    s.images = s.images + 1.0
    save_synset(s, synset)
    third = _evaluate(synset, "--epochs", "2", "--model", "convnet-linear")
    assert calls == [2, 2, 2] and third["synset_sha256"] == file_sha256(synset) != second["synset_sha256"]


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; expected one of: digits, fashion-mnist, cifar10"):
        load_dataset("mnist")
