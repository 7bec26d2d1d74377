"""RefT quick reproduction (the learning check, gFSIS and iFSIS over 3 fine-tuning seeds): runs end to end and learns
(slow: minutes), and the verdict rule on paired per-seed differences (fast: the paired t interval, values from
printed t tables)."""

from pathlib import Path

import pytest
import torch

from polyzoo.detection.reft.reproduction import _combine, decide


def test_decide_is_the_paired_t_interval_of_the_differences():
    # mean 2, sample std 1, n 3: 95 % t interval 2 ± 4.303 · 1/√3 = [-0.48, 4.48] (t(0.975, 2) = 4.303, printed tables)
    assert decide([1.0, 2.0, 3.0]) is None
    # mean 2, std 0.1: [1.75, 2.25] above 0; mirrored below 0
    assert decide([1.9, 2.0, 2.1]) is True
    assert decide([-1.9, -2.0, -2.1]) is False
    # n 5, mean 2, std 1.58 (values 0..4): 2 ± 2.776 · 1.58/√5 = [0.04, 3.96], just above 0
    assert decide([0.0, 1.0, 2.0, 3.0, 4.0]) is True
    assert decide([0.0, 0.0, 0.0]) is None  # no difference at all is no evidence for "at least"
    assert decide([5.0]) is None  # one seed has no spread
    assert decide([0.5, 0.5, 0.5]) is True  # identical positive differences: a zero-width interval above 0


def test_quick_mode_trains_k1_and_full_mode_k1_and_k5_over_3_and_5_seeds():
    from polyzoo.detection.reft.reproduction import quick_seeds, quick_shots

    assert quick_shots(True) == (1,) and quick_shots(False) == (1, 5)
    assert quick_seeds(2, True) == (2, 3, 4) and quick_seeds(0, False) == (0, 1, 2, 3, 4)


def test_progress_counts_every_training_step(tmp_path, monkeypatch):
    """The check's one bar advances once per training step and its total is the number of steps trained."""
    from polyzoo.detection.reft import reproduction as R

    counted = []

    def fake_train(model, dataset, steps, lr, batch, seed, reft, support_grad, progress=None):
        counted.append(steps)
        for _ in range(steps):
            progress.update(1)
        return 0.0

    class Bar:
        n = 0

        def update(self, n=1, postfix=None):
            Bar.n += n

    monkeypatch.setattr(R, "_train", fake_train)
    monkeypatch.setattr(R, "_evaluate", lambda *a, **k: {"segm": {"bAP": 0.0}, "bbox": {"bAP": 0.0}})
    monkeypatch.setattr(R, "compute_support_bank", lambda *a, **k: None, raising=False)
    import polyzoo.detection.reft.mmdet_plugin as plugin

    monkeypatch.setattr(plugin, "compute_support_bank", lambda *a, **k: None)
    monkeypatch.setattr(R._Setup, "model", lambda self, *a, **k: _FakeModel())
    monkeypatch.setattr(R, "_grow_head", lambda *a: None)
    R.run_learning_check(tmp_path, quick=True, seed=0, progress=Bar())
    # quick: 2 base models x 120, then 3 seeds x K = 1 x (2 gFSIS + 2 iFSIS) x 40
    assert counted == [120, 120] + [40] * 12
    assert Bar.n == sum(counted) == R.total_steps(True, 3) == 720


class _FakeModel:
    def set_support_bank(self, bank):
        pass

    def set_base_bank(self, bank):
        pass

    def attach_teacher(self, teacher):
        pass


def test_combined_verdict_fails_on_any_fail_and_is_inconclusive_on_any_doubt():
    assert _combine([True, True]) is True
    assert _combine([True, None]) is None
    assert _combine([None, False, True]) is False


@pytest.mark.slow
def test_quick_reproduction_runs_and_learns(tmp_path: Path):
    from polyzoo.detection.reft.reproduction import check
    from polyzoo.shared.report import ReproContext

    result, ifsis = check(ReproContext(out_dir=tmp_path, quick=True, seed=0))
    # quick mode: K = 1 only (K = 5 in full mode)
    assert [r[:2] for r in result.rows] == [["RefT", 1], ["Mask2Former", 1]]
    assert all(cell.n == 3 for r in result.rows for cell in r[2:-1])  # mean ± std over 3 seeds
    base_bap = [float(r[-1]) for r in result.rows]
    assert min(base_bap) > 5.0, "base training must learn the base classes (segm bAP > 5 on held-out images)"
    assert result.status in ("PASS", "FAIL", "INCONCLUSIVE") and "Paired differences" in result.verdict
    kd, plain = "RefT + class-enhanced KD", "RefT, no KD"
    assert [r[:2] for r in ifsis.rows] == [[kd, 1], [plain, 1]]
    # iFSIS fine-tuning learns the novel classes from the novel K-shot files alone
    assert max(r[2].mean for r in ifsis.rows) > 0.0
    assert ifsis.status in ("PASS", "FAIL", "INCONCLUSIVE") and ifsis.verdict


def _shapes(tmp_path, n=6):
    from polyzoo.detection.reft.reproduction import _names, _Setup
    from polyzoo.detection.reft.shapes import SHAPE_CATEGORIES, make_shapes_coco

    ann = make_shapes_coco(tmp_path / "s", n, seed=4)
    setup = _Setup(tmp_path, torch.device("cpu"))
    return setup, ann, _names([c["id"] for c in SHAPE_CATEGORIES])


def test_cached_loads_give_the_dataset_items(tmp_path):
    """The check's datasets load each image once; every access still equals the plain dataset's item, including
    RandomFlip's draws from NumPy's global generator."""
    import numpy as np

    from polyzoo.detection.reft.reproduction import CachedLoads

    setup, ann, names = _shapes(tmp_path)
    for train in (True, False):
        cached = setup.dataset(ann, tmp_path / "s" / "images", names, train=train)
        assert isinstance(cached, CachedLoads)
        assert [type(t).__name__ for t in cached.head] == ["LoadImageFromFile", "LoadAnnotations"]
        plain = cached.dataset
        order = [0, 3, 3, 5, 1, 0, 2, 4, 4, 0]
        np.random.seed(7)  # noqa: NPY002  (RandomFlip draws from the global generator)
        direct = [plain[i] for i in order]
        np.random.seed(7)  # noqa: NPY002  (RandomFlip draws from the global generator)
        again = [cached[i] for i in order]
        flips = {bool(d["data_samples"].metainfo.get("flip")) for d in direct}
        assert flips == ({False, True} if train else {False})
        for a, b in zip(direct, again, strict=True):
            assert torch.equal(a["inputs"], b["inputs"])
            ga, gb = a["data_samples"].gt_instances, b["data_samples"].gt_instances
            assert torch.equal(ga.labels, gb.labels) and torch.equal(ga.bboxes.tensor, gb.bboxes.tensor)
            np.testing.assert_array_equal(ga.masks.masks, gb.masks.masks)
            assert a["data_samples"].metainfo.get("flip") == b["data_samples"].metainfo.get("flip")
        assert len(cached) == len(plain) and cached.get_data_info(2) == plain.get_data_info(2)


def test_models_are_built_on_the_requested_device(tmp_path, monkeypatch):
    from polyzoo.detection.reft import reproduction as R
    from polyzoo.detection.reft.models import RefT

    calls = []
    to = RefT.to

    def spy_to(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("device"))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(RefT, "to", spy_to)
    setup, _, _ = _shapes(tmp_path, n=1)
    model = setup.model(6, True, 0)
    assert calls == [torch.device("cpu")]
    assert model.data_preprocessor.device == torch.device("cpu")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}

    # run_learning_check hands ctx.device, resolved, to the setup that builds every model
    seen = []

    class Stop(Exception):
        pass

    class SpySetup:
        def __init__(self, root, device=None, progress=None):
            seen.append(device)
            raise Stop

    monkeypatch.setattr(R, "_Setup", SpySetup)
    with pytest.raises(Stop):
        R.check(R.ReproContext(out_dir=tmp_path / "rep", quick=True, device="cpu"))
    assert seen == [torch.device("cpu")]


def test_unavailable_cuda_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    from polyzoo.detection.reft import reproduction as R

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        R.check(R.ReproContext(out_dir=tmp_path, quick=True, device="cuda"))
    assert not any((tmp_path / "runs").rglob("*.json"))
