"""The report's plots: what a reader sees (panels that do not draw over each other), written as PNG."""
from __future__ import annotations

from ptv2.experiments.plots import curves_figure, plot_curves


def _history(n: int, loss0: float, val0: float) -> list[dict]:
    return [{"epoch": e, "train_loss": None if e == 0 else loss0 - 0.01 * e, "val_score": val0 + 0.37 * e}
            for e in range(n + 1)]


def test_training_curve_panels_do_not_overlap(tmp_path):
    """Regression (session 30): report/curves.png drew each panel's val-score axis (ticks and label) over the next
    panel's train-loss axis (a fixed grid with twin y axes); each panel with its twin now keeps to its own room."""
    import matplotlib.pyplot as plt

    histories = {"sst2": _history(6, 0.389, 79.5), "cb": _history(3, 0.0912, 64.0), "stsb": _history(5, 5.7013, 83.2)}
    fig = curves_figure(histories, kept={"sst2": 6, "cb": 0})
    assert [a.get_title() for a in fig.axes[:3]] == ["sst2 (kept: epoch 6)", "cb (kept: epoch 0)", "stsb"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes[:len(histories)]:  # the task panels; their twins follow in fig.axes
        twin = [a for a in fig.axes if a is not ax and a.get_shared_x_axes().joined(a, ax)]
        assert len(twin) == 1
        boxes.append((ax.get_tightbbox(renderer), twin[0].get_tightbbox(renderer)))
    for (left, left_twin), (right, right_twin) in zip(boxes, boxes[1:]):
        assert max(left.x1, left_twin.x1) <= min(right.x0, right_twin.x0), (left, left_twin, right, right_twin)
    plt.close(fig)
    plot_curves(histories, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_comparison_plot_draws_no_label_over_another():
    """Regression (session 30): `ptv2 compare --tasks cb --methods ptv2,lora` drew 'ptv2' and 'lora' over each other
    (the same trainable count and score), the log axis' minor labels into each other (2×10⁻² 3×10⁻² ...), and
    the legend over the bars."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ptv2.experiments.plots import comparison_figure

    def row(method, pct, dev):
        return {"method": method, "dev": {"cb": [dev]}, "average": dev, "pct": [pct], "s_per_epoch": {"cb": 4.0},
                "peak_mb": [2000.0]}

    rows = [row("frozen", 0.02, 76.8), row("ptv2", 0.344, 76.8), row("lora", 0.344, 76.8)]
    fig = comparison_figure(rows, ["cb"], {"cb": "accuracy"})
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    bars_ax, share_ax = fig.axes[0], fig.axes[1]
    assert sorted(t.get_text() for t in share_ax.texts) == ["frozen", "ptv2, lora"]
    ticks = [t.get_window_extent(r) for t in share_ax.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
    assert ticks and not any(_overlap(x, y) for i, x in enumerate(ticks) for y in ticks[i + 1:])
    legend = bars_ax.get_legend().get_window_extent(r)
    bars = [p.get_window_extent(r) for p in bars_ax.patches if isinstance(p, Rectangle)]
    assert bars and not any(_overlap(legend, b) for b in bars)
    plt.close(fig)


def test_the_task_bars_legend_covers_no_bar():
    """Regression (session 30): the report's tasks.png put its legend over SST-2's bars (and the transfer plot's
    over CB's)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ptv2.experiments.plots import tasks_figure

    scores = {"sst2": {"frozen backbone": 77.9, "adapted": 80.8, "no adaptation": 78.9},
              "cb": {"frozen backbone": 78.6, "adapted": 76.8, "no adaptation": None}}
    fig = tasks_figure(scores, "Dev metric per task")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(r)
    bars = [p.get_window_extent(r) for p in ax.patches if isinstance(p, Rectangle) and p.get_height() == p.get_height()]
    assert len(bars) == 5 and not any(_overlap(legend, b) for b in bars)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["frozen backbone", "adapted", "no adaptation"]
    plt.close(fig)


def test_the_plots_are_drawn_whatever_backend_the_environment_names(tmp_path):
    """Regression (session 43): matplotlib validates MPLBACKEND on import, so a name this matplotlib lacks (a shell
    or notebook of the user's) ended the report stage in "ValueError: Key backend: 'nonsense' is not a valid value
    for backend"; the plots always draw with Agg into files, whatever it names."""
    import os
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from ptv2.experiments.plots import plot_curves; "
            "plot_curves({'t': [{'epoch': 0, 'train_loss': None, 'val_score': 50.0}, "
            "{'epoch': 1, 'train_loss': 0.4, 'val_score': 60.0}]}, Path(sys.argv[1]))")
    for backend in ("nonsense", "TkAgg"):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{backend}.png")],
                           env={**os.environ, "MPLBACKEND": backend, "DISPLAY": ""}, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (tmp_path / f"{backend}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
