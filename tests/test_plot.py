"""A saved `RenderResult.plot()` shows its axis labels whole (issue 28, item 15)."""
from __future__ import annotations

import pytest
import torch.nn as nn

import lucent_dsl as ld

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402


def test_a_saved_plot_keeps_its_axis_labels_inside_the_figure(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    r = ld.render(ld.channel("0", 1) - 0.01 * ld.total_variation(), model, size=16, steps=3, progress=False, seed=0)
    ax = r.plot()
    fig = ax.figure
    try:
        fig.savefig(tmp_path / "history.png")  # saving lays the figure out as a reader sees it
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for label in (ax.xaxis.label, ax.yaxis.label):
            ext = label.get_window_extent(renderer)
            assert label.get_text() and ext.width > 0
            assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, (
                f"{label.get_text()!r} at {ext.bounds} is cut off by the figure {box.bounds}"
            )
    finally:
        plt.close(fig)
