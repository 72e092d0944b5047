"""Pictures without a plotting library: image grids and line charts drawn with PIL."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid


def grid_image(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image, nrow images a row (default: square-ish)."""
    images = images.detach().float().cpu().clamp(0, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    g = make_grid(images, nrow=nrow, padding=pad, pad_value=1.0)
    return Image.fromarray((g.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    grid_image(images, nrow).save(path)


@torch.no_grad()
def save_samples(model, path: str | os.PathLike, temperature: float, seed: int = 0) -> None:
    """A grid of prior samples: 16 in two rows, or for a model with classes a row of 8 per class."""
    C = model.config.classes
    label = torch.arange(C).repeat_interleave(8).tolist() if C else None
    save_grid(model.sample(8 * C if C else 16, temperature=temperature, seed=seed, label=label), path, nrow=8)


def _color(i: int, n: int) -> tuple[int, int, int]:
    """A blue -> red ramp for latents ordered bottom-up."""
    t = i / max(1, n - 1)
    return int(40 + 200 * t), int(90 + 60 * math.sin(math.pi * t)), int(230 - 200 * t)


def line_chart(series: dict[str, list[tuple[float, float]]], path: str | os.PathLike, *, title: str,
               xlabel: str, ylabel: str, size: tuple[int, int] = (900, 520), note: str = "") -> None:
    """Draw each named series of (x, y) points; the legend lists them in order; `note` is a line
    under the title (what the curves are). Text at 14 px (axes 12 px), readable at page size."""
    w, h = size
    left, right, top, bottom = 80, 190, 60 if note else 44, 56
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    big, small = ImageFont.load_default(size=15), ImageFont.load_default(size=13)
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not pts:
        d.text((w // 2 - 40, h // 2), "no data yet", fill="black", font=big)
        img.save(path)
        return
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    sx = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    sy = lambda y: h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)  # noqa: E731
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in range(5):
        yv = y0 + (y1 - y0) * t / 4
        xv = x0 + (x1 - x0) * t / 4
        d.text((5, sy(yv) - 7), f"{yv:.3g}", fill="black", font=small)
        d.text((sx(xv) - 15, h - bottom + 6), f"{xv:.4g}", fill="black", font=small)
        d.line([left, sy(yv), w - right, sy(yv)], fill=(230, 230, 230))
    d.text((left, 8), title, fill="black", font=big)
    if note:
        d.text((left, 28), note, fill=(90, 90, 90), font=small)
    d.text((w // 2 - 30, h - 24), xlabel, fill="black", font=big)
    d.text((5, top - 20), ylabel, fill="black", font=small)
    n = len(series)
    for i, (name, s) in enumerate(series.items()):
        col = _color(i, n)
        xy = [(sx(x), sy(y)) for x, y in s if math.isfinite(y)]
        if len(xy) > 1:
            d.line(xy, fill=col, width=2)
        elif xy:
            d.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=col)
        ly = top + i * (h - top - bottom) / max(n, 1)
        d.line([w - right + 8, ly + 6, w - right + 24, ly + 6], fill=col, width=3)
        d.text((w - right + 28, ly - 1), name, fill="black", font=small)
    img.save(path)


def kl_per_latent_plot(history: list[tuple[int, list[float]]], names: list[str], path: str | os.PathLike) -> None:
    """The paper's Fig. 2: log KL (nats) of each latent over training steps."""
    series = {name: [(step, math.log(max(kl[j], 1e-4))) for step, kl in history] for j, name in enumerate(names)}
    line_chart(series, path, title="KL per latent (valid split)", xlabel="step", ylabel="log KL (nats)")


def _colour(t: float) -> tuple[int, int, int]:
    """A dark-blue -> green -> yellow scale for t in [0, 1] (viridis-like, by linear pieces)."""
    stops = [(0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
             (1.0, (253, 231, 37))]
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            u = (t - t0) / (t1 - t0)
            return tuple(round(a + (b - a) * u) for a, b in zip(c0, c1))
    return stops[-1][1]


def kl_panel(metrics: Sequence[dict], names: Sequence[str]) -> tuple[list[float], list[str], list[list[float]]]:
    """One panel of the paper's Figure 2 from a run's metrics.jsonl rows: the training hours of each
    log row, the latent names (bottom-up), and each row's KL per latent of its training batches
    (nats); rows without a KL of every latent are left out."""
    rows = [r for r in metrics if isinstance(r.get("kl"), list) and len(r["kl"]) == len(names) and "seconds" in r]
    return [float(r["seconds"]) / 3600 for r in rows], list(names), [[float(v) for v in r["kl"]] for r in rows]


def kl_heatmaps(panels: dict[str, tuple[list[float], list[str], list[list[float]]]], path: str | os.PathLike, *,
                title: str, xlabel: str = "training hours", note: str = "") -> None:
    """The paper's Figure 2 as pictures: for each named panel (hours, latent names bottom-up, KL rows
    [time][latent] in nats) a map of log10 KL per latent (rows, the top latent on top) against time
    (columns), all panels on one colour scale with its bar; latents below 0.1 nats read as collapsed."""
    finite = [v for _, _, rows in panels.values() for r in rows for v in r if v > 0 and math.isfinite(v)]
    lo, hi = -1.0, max(1.0, math.log10(max(finite)) if finite else 1.0)
    cell_h, plot_w, left, gap = 12, 360, 90, 100
    heights = [len(names) * cell_h for _, names, _ in panels.values()]
    w = left + len(panels) * (plot_w + gap) + 90
    h = 70 + (max(heights) if heights else 0) + 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    big, small = ImageFont.load_default(size=15), ImageFont.load_default(size=11)
    d.text((left, 8), title, fill="black", font=big)
    if note:
        d.text((left, 28), note, fill="#444", font=small)
    top = 60
    for p, (name, (hours, names, rows)) in enumerate(panels.items()):
        x0 = left + p * (plot_w + gap)
        d.text((x0, top - 16), name, fill="black", font=big)
        n_lat, n_t = len(names), len(rows)
        t_max = max(hours) if hours else 1.0
        for i, row in enumerate(rows):
            xa = x0 + round(plot_w * (hours[i - 1] if i else 0.0) / t_max)
            xb = max(xa + 1, x0 + round(plot_w * hours[i] / t_max))
            for j, v in enumerate(row[:n_lat]):
                y = top + (n_lat - 1 - j) * cell_h
                t = (math.log10(v) - lo) / (hi - lo) if v > 0 and math.isfinite(v) else 0.0
                d.rectangle([xa, y, xb, y + cell_h - 1], fill=_colour(t))
        for j, label in enumerate(names):
            if n_lat <= 24 or j % 2 == 0:
                d.text((x0 - 4, top + (n_lat - 1 - j) * cell_h), label, fill="black", font=small, anchor="ra")
        base = top + n_lat * cell_h
        d.line([x0, base, x0 + plot_w, base], fill="black")
        for f in (0.0, 0.5, 1.0):
            d.text((x0 + plot_w * f, base + 4), f"{t_max * f:.2g}", fill="black", font=small, anchor="ma")
        d.text((x0 + plot_w / 2, base + 20), xlabel, fill="black", font=small, anchor="ma")
        if n_t == 0:
            d.text((x0 + 10, top + 10), "no KL logged yet", fill="black", font=small)
    # the colour bar: log10 KL in nats
    bx, by, bh = w - 70, top, max(heights) if heights else 100
    for i in range(bh):
        d.line([bx, by + bh - 1 - i, bx + 14, by + bh - 1 - i], fill=_colour(i / max(1, bh - 1)))
    for v in range(math.ceil(lo), math.floor(hi) + 1):
        y = by + bh - 1 - (v - lo) / (hi - lo) * (bh - 1)
        d.text((bx + 18, y - 6), f"{10 ** v:g}", fill="black", font=small)
    d.text((bx - 4, by + bh + 6), "KL (nats)", fill="black", font=small)
    img.save(path)
