"""The CMT learning check's plumbing (fast): the cached pipeline head gives the dataset's own items, the device reaches
the training, the quick schedule's learning rate, and the verdict rule (PASS / INCONCLUSIVE in quick mode / FAIL)."""

import math

import numpy as np
import pytest
import torch

from polyzoo.detection.cmt import learning_check as lc
from polyzoo.shared.report import ReproContext


def _toy(tmp_path, scenes=2):
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    write_toy_dataset(tmp_path / "toy", ToySceneConfig(num_scenes=scenes, seed=3))
    return lc._build(tmp_path / "toy")


def _reseed(pipeline_transforms, seed):
    for t in pipeline_transforms:
        if hasattr(t, "rng"):
            t.rng = np.random.default_rng(seed)


def test_cached_head_items_equal_the_dataset_items(tmp_path):
    _, train_set, _ = _toy(tmp_path)
    cached = lc.CachedHead(train_set)  # shares the dataset's transform objects, so one ModalMask3D generator
    assert [type(t).__name__ for t in cached.tail] == ["ModalMask3D", "Pack3DDetInputs"]
    order = [0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0]
    _reseed(train_set.pipeline.transforms, 5)
    direct = [train_set[i] for i in order]
    _reseed(train_set.pipeline.transforms, 5)
    again = [cached[i] for i in order]
    masked = {(bool(d["inputs"]["points"].any()), bool(d["inputs"]["img"].any())) for d in direct}
    assert len(masked) >= 2, f"the draws should cover more than one masking state, got {masked}"
    for a, b in zip(direct, again, strict=True):
        assert torch.equal(a["inputs"]["points"], b["inputs"]["points"])
        assert torch.equal(a["inputs"]["img"], b["inputs"]["img"])
        ga, gb = a["data_samples"].gt_instances_3d, b["data_samples"].gt_instances_3d
        assert torch.equal(ga.bboxes_3d.tensor, gb.bboxes_3d.tensor)
        assert torch.equal(ga.labels_3d, gb.labels_3d)
        np.testing.assert_array_equal(a["data_samples"].metainfo["lidar2img"], b["data_samples"].metainfo["lidar2img"])
    # a cached item is a copy: masking one draw (points zeroed in place) leaves the cache untouched
    pts = cached.items[0]["points"].tensor
    assert pts.abs().sum() > 0


def test_training_runs_on_the_requested_device(tmp_path, monkeypatch):
    """The model is moved to ``cfg.device`` and every training/prediction input reaches it there."""
    seen = {"to": [], "inputs": set(), "params": set()}
    build = lc._build

    def spy_build(root):
        model, train_set, test_sets = build(root)
        to, forward = model.to, model.forward

        def spy_to(*args, **kwargs):
            seen["to"].append(args[0] if args else kwargs.get("device"))
            return to(*args, **kwargs)

        def spy_forward(inputs, data_samples, mode="tensor"):
            seen["inputs"] |= {v.device for v in inputs.values() if isinstance(v, torch.Tensor)}
            seen["inputs"] |= {p.device for p in inputs.get("points", [])}
            seen["params"] |= {p.device for p in model.parameters()}
            return forward(inputs, data_samples, mode=mode)

        monkeypatch.setattr(model, "to", spy_to)
        monkeypatch.setattr(model, "forward", spy_forward)
        return model, train_set, test_sets

    monkeypatch.setattr(lc, "_build", spy_build)
    out = lc.run_learning_check(
        tmp_path, lc.LearningCheckConfig(steps=2, num_scenes=2, device="cpu", progress=False, eval_every=1)
    )
    assert seen["to"] == [torch.device("cpu")]
    assert seen["inputs"] == {torch.device("cpu")} and seen["params"] == {torch.device("cpu")}
    assert out["device"] == "cpu" and len(out["history"]) == 2
    assert [c["step"] for c in out["curve"]] == [1, 2]


def test_unavailable_cuda_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"cuda.*CUDA is not available"):
        lc.run_learning_check(tmp_path / "a", lc.LearningCheckConfig(device="cuda"))
    assert not (tmp_path / "a" / "toy_scenes").exists()
    with pytest.raises(ValueError, match="CUDA is not available"):
        lc.check(ReproContext(out_dir=tmp_path / "b", quick=True, device="cuda"))


def test_learning_rate_schedules():
    cfg = lc.LearningCheckConfig(steps=400, lr=2e-3, lr_schedule="cosine")
    for step in (0, 1, 100, 200, 333, 399):
        assert lc.lr_at(cfg, step) == pytest.approx(2e-3 * (1 + math.cos(math.pi * step / 400)) / 2, rel=1e-12)
    assert lc.lr_at(cfg, 200) == pytest.approx(1e-3)
    assert lc.lr_at(lc.LearningCheckConfig(lr=1e-3), 777) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        lc.lr_at(lc.LearningCheckConfig(lr_schedule="linear"), 0)


def test_full_mode_keeps_3000_constant_steps_and_quick_mode_is_shorter():
    full = lc.check_config(quick=False, seed=4, device="cpu")
    assert (full.steps, full.lr, full.lr_schedule, full.seed) == (3000, 1e-3, "constant", 4)
    quick = lc.check_config(quick=True, seed=4, device="cpu")
    assert quick.steps < 1000 and quick.lr_schedule == "cosine" and quick.seed == 4
    assert (quick.batch_size, quick.lr) == (4, 1e-3)


def test_no_nan_fill_changes_no_number_and_settings_are_restored(tmp_path):
    """Deterministic algorithms stay on; switching off their NaN fill of new tensors changes no loss or AP (nothing
    reads uninitialised memory), and the run puts torch's settings back."""
    torch.utils.deterministic.fill_uninitialized_memory = True
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    runs = [
        lc.run_learning_check(
            tmp_path / str(fill),
            lc.LearningCheckConfig(steps=2, num_scenes=2, progress=False, fill_uninitialized_memory=fill),
        )
        for fill in (True, False)
    ]
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["ap"] == runs[1]["ap"]
    assert torch.utils.deterministic.fill_uninitialized_memory is True
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def _fake_run(ap_both_2, ap_cam_4):
    def run(out_dir, cfg, progress=None):
        table = {"AP@0.5": 0.0, "AP@1": 0.0, "AP@2": 0.0, "AP@4": 0.0, "mAP": 0.0}
        ap = {None: dict(table), "points": dict(table), "image": dict(table)}
        ap[None]["AP@2"], ap["points"]["AP@4"] = ap_both_2, ap_cam_4
        hist = [{"loss_cls": 1.0, "loss_bbox": 1.0}] * 20
        return {"ap": ap, "history": hist, "steps": cfg.steps, "train_seconds": 1.0, "device": cfg.device}

    return run


@pytest.mark.parametrize(
    ("both", "cam", "quick", "status"),
    [
        (0.5, 0.2, True, "PASS"),  # the thresholds themselves count as reached (≥)
        (0.82, 0.64, False, "PASS"),
        (0.49, 0.64, True, "INCONCLUSIVE"),  # a short run that falls short shows nothing against the claim
        (0.82, 0.19, True, "INCONCLUSIVE"),
        (0.49, 0.64, False, "FAIL"),  # the full schedule falling short is a failure
        (0.82, 0.19, False, "FAIL"),
    ],
)
def test_verdict_rule(tmp_path, monkeypatch, both, cam, quick, status):
    monkeypatch.setattr(lc, "run_learning_check", _fake_run(both, cam))
    (result,) = lc.check(ReproContext(out_dir=tmp_path, quick=quick))
    assert result.status == status
    assert ("Inconclusive" in result.verdict) == (status == "INCONCLUSIVE")
