"""Pictures: the KL-per-latent maps (the paper's Figure 2) put each latent's KL on one log colour scale."""
from __future__ import annotations

from PIL import Image

from biva_core.io.plots import _color, _colour, kl_heatmaps, line_chart


def test_kl_heatmaps_colour_collapsed_and_active_latents_apart(tmp_path):
    """Two panels, one colour scale: a latent at 0.1 nats is drawn in the scale's lowest colour, one
    at the largest KL in its highest, whichever panel it is in."""
    hours = [0.5, 1.0]
    panels = {"A": (hours, ["z1", "z2"], [[100.0, 0.1], [100.0, 0.1]]),
              "B": (hours, ["z1", "z2", "z3"], [[1000.0, 5.0, 0.1], [1000.0, 5.0, 0.1]])}
    path = tmp_path / "kl.png"
    kl_heatmaps(panels, path, title="t")
    img = Image.open(path).convert("RGB")
    top, cell_h, left, plot_w, gap = 60, 12, 90, 360, 100
    pixel = lambda panel, latent, n: img.getpixel((left + panel * (plot_w + gap) + plot_w // 2,  # noqa: E731
                                                   top + (n - 1 - latent) * cell_h + cell_h // 2))
    assert pixel(0, 1, 2) == _colour(0.0) == pixel(1, 2, 3)        # 0.1 nats: collapsed, in both panels
    assert pixel(1, 0, 3) == _colour(1.0)                           # the largest KL
    assert pixel(0, 0, 2) == _colour(3 / 4)                         # log10 100 on the scale -1 .. 3


def test_line_chart_draws_a_legend_entry_in_each_series_colour(tmp_path):
    """The Runs tab's curves: each series' swatch in the legend column, in its line's colour, one
    below the other (Gradio's own plots drew the legend's title only)."""
    series = {"train (batch)": [(0, 5.0), (10, 4.0)], "valid, EMA weights": [(0, 4.8), (10, 3.9)],
              "valid, raw weights": [(0, 4.9), (10, 4.1)]}
    path = tmp_path / "curves.png"
    line_chart(series, path, title="t", xlabel="step", ylabel="bits/dim", size=(900, 520))
    img = Image.open(path).convert("RGB")
    w, h, right, top, bottom = 900, 520, 190, 44, 56
    for i in range(3):
        y = round(top + i * (h - top - bottom) / 3 + 6)
        assert img.getpixel((w - right + 16, y)) == _color(i, 3), i
