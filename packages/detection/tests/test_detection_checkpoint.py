"""Checkpoint policy: weights_only stays on; mmengine's data-only globals are allowlisted in a scoped block; full
unpickling only inside trusted_full_unpickling; the spconv CPU patch makes sparse conv train without CUDA."""

import os
import pickle

import numpy as np
import pytest
import torch

from polyzoo.detection.checkpoint import load_state_dict, mmengine_safe_globals, trusted_full_unpickling


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _mmengine_like_checkpoint(path):
    from mmengine.config import ConfigDict
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("polyzoo-test")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/loss", np.float64(0.5))
    ckpt = {
        "meta": {"epoch": 1, "iter": 2, "seed": np.int64(3), "cfg": ConfigDict(a=1), "arr": np.arange(3)},
        "state_dict": {"w": torch.ones(2, 2)},
        "message_hub": hub.state_dict(),
    }
    torch.save(ckpt, path)


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "epoch_1.pth"
    _mmengine_like_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with mmengine_safe_globals():
        ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["iter"] == 2 and int(ckpt["meta"]["seed"]) == 3
    np.testing.assert_array_equal(ckpt["meta"]["arr"], np.arange(3))
    assert torch.equal(load_state_dict(path)["w"], torch.ones(2, 2))
    # the allowlist is scoped: outside the block the default policy is back
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_untrusted_globals_stay_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _Evil()}, path)
    with mmengine_safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(path)


def test_full_unpickling_is_scoped_and_explicit(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    path = tmp_path / "own.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "obj": {1, 2}, "cls": torch.nn.Identity()}, path)
    with trusted_full_unpickling(path):
        assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
        obj = torch.load(path)  # mmengine's call style: no weights_only argument
    assert isinstance(obj["cls"], torch.nn.Identity)
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_load_state_dict_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pth")
    torch.save({"not": "weights"}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        load_state_dict(tmp_path / "x.pth")


def test_spconv_cpu_patch_enables_backward():
    from polyzoo.detection.spconv_cpu import patch_spconv_cpu

    assert patch_spconv_cpu()
    assert patch_spconv_cpu()  # idempotent
    import spconv.pytorch as spconv
    import spconv.pytorch.ops as spops

    if not torch.cuda.is_available():
        assert spops.get_current_stream() == 0
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(30, 4, generator=gen, requires_grad=True)
    coords = torch.unique(torch.randint(0, 8, (30, 3), generator=gen), dim=0).int()
    feats = feats[: len(coords)]
    idx = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    x = spconv.SparseConvTensor(feats, idx, [8, 8, 8], 1)
    net = spconv.SparseSequential(spconv.SubMConv3d(4, 8, 3, indice_key="a"), spconv.SparseConv3d(8, 8, 3, stride=2))
    out = net(x)
    out.features.square().sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_getattr_stand_in_refuses_other_lookups(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    class _GetattrEvil:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, "__init__"))

    path = tmp_path / "evil_getattr.pth"
    torch.save({"x": _GetattrEvil()}, path)
    with mmengine_safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
