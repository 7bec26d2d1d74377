"""Safe loading and atomic writes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from polyzoo.shared.io import (
    UnsafeCheckpointError,
    atomic_path,
    load_torch_file,
    pack_tensors,
    unpack_tensors,
)
from polyzoo.shared.seed import get_rng_state


class _Payload:
    """Unpickling this opens (creates) a file: a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: refused to unpickle"):
        load_torch_file(evil)
    assert not marker.exists()


def test_state_dict_loads(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(3.0), "meta": {"epoch": 3}}, path)
    loaded = load_torch_file(path)
    assert torch.equal(loaded["w"], torch.arange(3.0)) and loaded["meta"] == {"epoch": 3}
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_torch_file(tmp_path / "missing.pt")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_pack_roundtrip_of_optimizer_and_rng_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": get_rng_state()}
    as_json, tensors = pack_tensors(state)
    back = unpack_tensors(as_json, tensors)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert set(back["optimizer"]["state"]) == {0, 1}
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    random.setstate(back["rng"]["python"])
    np.random.set_state(back["rng"]["numpy"])  # noqa: NPY002
    torch.set_rng_state(back["rng"]["torch"])
    with pytest.raises(TypeError, match="object"):
        pack_tensors({"bad": object()})
