"""RefT quick reproduction (the learning check): runs end to end and learns (slow: several minutes on 2 cores)."""

from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_reproduction_runs_and_learns(tmp_path: Path):
    from polyzoo.detection.reft.reproduction import check
    from polyzoo.shared.report import ReproContext

    result = check(ReproContext(out_dir=tmp_path, quick=True, seed=0))
    assert [r[:2] for r in result.rows] == [["RefT", 1], ["Mask2Former", 1], ["RefT", 5], ["Mask2Former", 5]]
    base_bap = [float(r[-1]) for r in result.rows]
    assert min(base_bap) > 5.0, "base training must learn the base classes (segm bAP > 5 on held-out images)"
    assert isinstance(result.passed, bool) and result.verdict
