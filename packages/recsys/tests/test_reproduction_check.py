"""The recsys reproduction check's verdict: Welch rule on per-seed AUCs (the trainings are replaced by planted
results here; `polyzoo reproduce --only recsys` runs them)."""

import dataclasses

import pytest

from polyzoo.recsys import reproduction as rep
from polyzoo.recsys.synthetic import SyntheticConfig
from polyzoo.shared.report import ReproContext


def _plant(monkeypatch, aucs):
    def fake_compare(specs, num_rows, num_fields, train_stream, test_stream, seeds, device="cpu", on_done=None):
        assert device == "cpu" and list(specs) == list(aucs)
        out = {}
        for name in specs:
            out[name] = [{"auc": aucs[name][i], "logloss": 0.5, "seconds": 1.0} for i, _ in enumerate(seeds)]
            for seed, res in zip(seeds, out[name], strict=True):
                on_done(name, seed, res)
        return out

    monkeypatch.setattr(rep, "compare_models", fake_compare)
    # a small synthetic file: the check still generates, reads and scores it
    monkeypatch.setattr(rep, "SyntheticConfig", lambda seed: dataclasses.replace(SyntheticConfig(seed=seed), rows=2000))


BASE = {"LR": [0.67, 0.67, 0.67], "FM": [0.77, 0.772, 0.771], "DeepFM": [0.83, 0.831, 0.829]}


@pytest.mark.parametrize(
    ("xdeepint", "xdeepfm", "expected"),
    [
        ([0.840, 0.841, 0.842], [0.838, 0.839, 0.837], True),  # on par (above best − 0.005) beyond the spread
        ([0.815, 0.8315, 0.848], [0.838, 0.840, 0.837], None),  # issue 23: −0.007 gap, spread 0.017: undecided
        ([0.810, 0.811, 0.812], [0.838, 0.839, 0.837], False),  # clearly more than 0.005 below the best
    ],
)
def test_synthetic_check_verdicts(tmp_path, monkeypatch, xdeepint, xdeepfm, expected):
    _plant(monkeypatch, {**BASE, "DCN-v2": [0.82, 0.821, 0.822], "xDeepFM": xdeepfm, "xDeepInt": xdeepint})
    ctx = ReproContext(out_dir=tmp_path / "report", quick=True, seed=0)
    (res,) = rep.check(ctx)
    assert res.passed is expected and res.seeds == [0, 1, 2]
    assert "xDeepInt − FM" in res.verdict and "xDeepInt − xDeepFM" in res.verdict and "Welch" in res.verdict
    assert (tmp_path / "report" / "runs" / "recsys" / "synthetic.csv").is_file()
    assert "runs/recsys/synthetic.csv" in res.notes[-1] and ctx.bar is not None and ctx.bar.n == 18


def test_synthetic_check_fails_when_fm_is_as_good(tmp_path, monkeypatch):
    # FM (no 3rd-order term) not measurably worse than xDeepInt: the first sub-claim fails
    _plant(
        monkeypatch,
        {
            **BASE,
            "FM": [0.85, 0.851, 0.852],
            "DCN-v2": [0.82, 0.821, 0.822],
            "xDeepFM": [0.838, 0.839, 0.837],
            "xDeepInt": [0.840, 0.841, 0.842],
        },
    )
    (res,) = rep.check(ReproContext(out_dir=tmp_path, quick=True))
    assert res.passed is False and "xDeepInt − FM" in res.verdict
