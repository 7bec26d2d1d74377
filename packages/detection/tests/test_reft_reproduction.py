"""RefT quick reproduction (the learning check, gFSIS and iFSIS over 3 fine-tuning seeds): runs end to end and learns
(slow: minutes), and the verdict rule on paired per-seed differences (fast: the paired t interval, values from
printed t tables)."""

from pathlib import Path

import pytest

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


def test_combined_verdict_fails_on_any_fail_and_is_inconclusive_on_any_doubt():
    assert _combine([True, True]) is True
    assert _combine([True, None]) is None
    assert _combine([None, False, True]) is False


@pytest.mark.slow
def test_quick_reproduction_runs_and_learns(tmp_path: Path):
    from polyzoo.detection.reft.reproduction import check
    from polyzoo.shared.report import ReproContext

    result, ifsis = check(ReproContext(out_dir=tmp_path, quick=True, seed=0))
    assert [r[:2] for r in result.rows] == [["RefT", 1], ["Mask2Former", 1], ["RefT", 5], ["Mask2Former", 5]]
    assert all(cell.n == 3 for r in result.rows for cell in r[2:-1])  # mean ± std over 3 seeds
    base_bap = [float(r[-1]) for r in result.rows]
    assert min(base_bap) > 5.0, "base training must learn the base classes (segm bAP > 5 on held-out images)"
    assert result.status in ("PASS", "FAIL", "INCONCLUSIVE") and "Paired differences" in result.verdict
    kd, plain = "RefT + class-enhanced KD", "RefT, no KD"
    assert [r[:2] for r in ifsis.rows] == [[kd, 1], [plain, 1], [kd, 5], [plain, 5]]
    # iFSIS fine-tuning learns the novel classes from the novel K-shot files alone
    assert max(r[2].mean for r in ifsis.rows) > 0.0
    assert ifsis.status in ("PASS", "FAIL", "INCONCLUSIVE") and ifsis.verdict
