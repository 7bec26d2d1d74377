"""polyzoo.shared.report helpers: mean ± sample std, Markdown tables, figures."""

import math
import statistics

import pytest

from polyzoo.shared.report import STD_NOTE, MeanStd, ReproContext, figure, markdown_table, mean_std, mean_std_bars


def test_mean_std_is_the_sample_std():
    vals = [0.81, 0.84, 0.9, 0.77]
    m = sum(vals) / 4
    sample = math.sqrt(sum((v - m) ** 2 for v in vals) / 3)  # ddof = 1
    ms = mean_std(vals)
    assert ms.mean == pytest.approx(m) and ms.std == pytest.approx(sample) and ms.n == 4
    assert ms.std == pytest.approx(statistics.stdev(vals)) and ms.std != pytest.approx(statistics.pstdev(vals))
    assert str(ms) == f"{m:.4f} ± {sample:.4f}"
    assert "ddof = 1" in STD_NOTE


def test_mean_std_scale_digits_nan_and_small_samples():
    ms = mean_std([0.5, float("nan"), 0.7], digits=2, scale=100)
    assert (ms.n, ms.mean) == (2, pytest.approx(60.0)) and str(ms) == f"60.00 ± {statistics.stdev([50, 70]):.2f}"
    one = mean_std([0.25])
    assert one.n == 1 and math.isnan(one.std) and str(one) == "0.2500"
    assert str(mean_std([])) == "-" and math.isnan(mean_std([float("nan")]).mean)


def test_markdown_table_formats_cells():
    table = markdown_table(["a", "b", "c"], [[1.23456789, MeanStd(0.5, 0.25, 3, 2), "x"], [float("nan"), 7, None]])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.235 | 0.50 ± 0.25 | x |", "| nan | 7 | None |"]
    assert markdown_table(["m"], [[0.5]], fmt=lambda v: f"{v:.1f}").splitlines()[-1] == "| 0.5 |"


def test_figure_writes_a_png_and_closes(tmp_path):
    import matplotlib.pyplot as plt

    ctx = ReproContext(out_dir=tmp_path / "report")
    path = ctx.figure_path("bars")
    before = len(plt.get_fignums())
    with figure(path, figsize=(3, 2)) as (_fig, ax):
        bars = mean_std_bars(ax, ["a", "b"], [mean_std([1.0, 2.0]), mean_std([3.0])])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(plt.get_fignums()) == before
    assert [b.get_height() for b in bars] == [1.5, 3.0]
    with pytest.raises(RuntimeError), figure(tmp_path / "fail.png") as (_fig, _ax):
        raise RuntimeError("boom")
    assert not (tmp_path / "fail.png").exists() and len(plt.get_fignums()) == before
