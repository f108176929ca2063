"""``curves.png``: whole-epoch ticks (a one-epoch run included) and no change to the caller's matplotlib."""

from __future__ import annotations

import csv

import matplotlib
import pytest
from matplotlib.figure import Figure

from tumorlab.training.epoch_log import plot_curves


def _metrics_csv(path, epochs: int):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "val/loss", "val/auroc"])
        for e in range(epochs):
            writer.writerow([e, 2 * (e + 1), 0.7 - 0.01 * e, 0.69 - 0.01 * e, 0.5 + 0.01 * e])
    return path


@pytest.mark.parametrize(("epochs", "ticks"), [(1, [1]), (3, [1, 2, 3])])
def test_curves_tick_whole_epochs(tmp_path, monkeypatch, epochs, ticks):
    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    backend = matplotlib.get_backend()
    path = plot_curves(_metrics_csv(tmp_path / "metrics.csv", epochs), "val/auroc")
    assert path == tmp_path / "curves.png" and path.stat().st_size > 5_000
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["loss", "auroc"]
    for ax in fig.axes:
        assert list(ax.get_xticks()) == ticks  # no fractional epochs around a single point
        low, high = ax.get_xlim()
        assert low < ticks[0] < ticks[-1] + 0.01 < high
    assert matplotlib.get_backend() == backend
