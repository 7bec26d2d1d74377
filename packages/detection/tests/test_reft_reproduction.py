"""RefT quick reproduction (the learning check, gFSIS and iFSIS): runs end to end and learns (slow: minutes)."""

from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_reproduction_runs_and_learns(tmp_path: Path):
    from polyzoo.detection.reft.reproduction import check
    from polyzoo.shared.report import ReproContext

    result, ifsis = check(ReproContext(out_dir=tmp_path, quick=True, seed=0))
    assert [r[:2] for r in result.rows] == [["RefT", 1], ["Mask2Former", 1], ["RefT", 5], ["Mask2Former", 5]]
    base_bap = [float(r[-1]) for r in result.rows]
    assert min(base_bap) > 5.0, "base training must learn the base classes (segm bAP > 5 on held-out images)"
    assert isinstance(result.passed, bool) and result.verdict
    kd, plain = "RefT + class-enhanced KD", "RefT, no KD"
    assert [r[:2] for r in ifsis.rows] == [[kd, 1], [plain, 1], [kd, 5], [plain, 5]]
    # iFSIS fine-tuning learns the novel classes from the novel K-shot files alone
    assert max(float(r[2]) for r in ifsis.rows) > 0.0
    assert isinstance(ifsis.passed, bool) and ifsis.verdict
