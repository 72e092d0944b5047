"""Pictures for the studio drawn with PIL (no plotting library): labelled grids, a bar chart
on a log axis and reference histograms with marked values."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (225, 225, 225)
FLAG = (215, 40, 40)
OK = (30, 110, 220)
TAIL = (252, 222, 222)


def heat(bits, vmax: float, height: int = 128) -> Image.Image:
    """A (H, W) array of bits per pixel as a heat map from black (0) over red and yellow to
    white (vmax and above), enlarged by a whole factor (nearest neighbour)."""
    t = np.clip(np.asarray(bits, dtype=np.float64) / max(vmax, 1e-9), 0, 1)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    image = Image.fromarray((rgb * 255).round().astype("uint8"), "RGB")
    factor = max(1, height // image.height)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def colour_bar(vmax: float, width: int = 128, label: str = "bits per pixel") -> Image.Image:
    """The heat map's scale, 0 to vmax, with its label."""
    bar = heat(np.linspace(0, vmax, width)[None].repeat(10, 0), vmax, height=10)
    out = Image.new("RGB", (width, 36), BACKGROUND)
    out.paste(bar.resize((width, 10)), (0, 0))
    d = ImageDraw.Draw(out)
    d.text((0, 12), "0", fill=INK, font=font(11))
    d.text((width - 30, 12), f"{vmax:.3g}", fill=INK, font=font(11))
    d.text((0, 23), label, fill=INK, font=font(10))
    return out


def font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], *, header: Sequence[str] = (),
                  pad: int = 4, label_width: int = 110) -> Image.Image:
    """One row of equally sized cells per (label, images); an optional header names the columns."""
    cell = rows[0][1][0]
    cw, ch = cell.size
    cols = max(len(images) for _, images in rows)
    top = 20 if header else 0
    grid = Image.new("RGB", (label_width + cols * (cw + pad) + pad, top + len(rows) * (ch + pad) + pad), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for c, text in enumerate(header):
        draw.text((label_width + pad + c * (cw + pad), 3), text, fill=INK, font=font(12))
    for r, (label, images) in enumerate(rows):
        y = top + pad + r * (ch + pad)
        draw.text((6, y + ch // 2 - 8), label, fill=INK, font=font(13))
        for c, image in enumerate(images):
            grid.paste(image.convert("RGB"), (label_width + pad + c * (cw + pad), y))
    return grid


def side_by_side(images: Sequence[Image.Image], *, pad: int = 6, caption: str = "",
                 titles: Sequence[str] = ()) -> Image.Image:
    """Images left to right, bottoms aligned, each under its title (when given), with an optional
    caption underneath."""
    h = max(i.height for i in images)
    top = 16 if titles else 0
    w = sum(i.width for i in images) + pad * (len(images) + 1)
    out = Image.new("RGB", (w, top + h + 2 * pad + (18 if caption else 0)), BACKGROUND)
    d = ImageDraw.Draw(out)
    x = pad
    for j, image in enumerate(images):
        out.paste(image.convert("RGB"), (x, top + pad + h - image.height))
        if j < len(titles) and titles[j]:
            d.text((x, 3), titles[j], fill=INK, font=font(11))
        x += image.width + pad
    if caption:
        d.text((pad, top + h + pad + 2), caption, fill=INK, font=font(13))
    return out


def log_bar_chart(values: Sequence[float], labels: Sequence[str], *, title: str, ylabel: str,
                  size: tuple[int, int] = (900, 420), floor: float = 1e-2) -> Image.Image:
    """Bars on a log10 axis (values below `floor` drawn at the floor), value printed on each."""
    w, h = size
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", size, BACKGROUND)
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill=INK, font=font(15))
    d.text((6, 10), ylabel, fill=INK, font=font(11))
    logs = [math.log10(max(v, floor)) for v in values]
    lo = math.floor(math.log10(floor))
    hi = max(lo + 1, math.ceil(max(logs, default=lo + 1)))
    sy = lambda v: h - bottom - (v - lo) / (hi - lo) * (h - top - bottom)  # noqa: E731
    for e in range(lo, hi + 1):
        d.line([left, sy(e), w - right, sy(e)], fill=GRID)
        d.text((8, sy(e) - 7), f"{10.0 ** e:g}", fill=INK, font=font(11))
    n = max(1, len(values))
    slot = (w - left - right) / n
    for i, (v, lg, label) in enumerate(zip(values, logs, labels)):
        x0, x1 = left + i * slot + slot * 0.15, left + (i + 1) * slot - slot * 0.15
        t = i / max(1, n - 1)
        color = (int(40 + 200 * t), int(90 + 60 * math.sin(math.pi * t)), int(230 - 200 * t))
        d.rectangle([x0, sy(lg), x1, sy(lo)], fill=color)
        d.text((x0, sy(lg) - 13), f"{v:.3g}" if v >= 0.01 else "<.01", fill=INK, font=font(9))
        d.text((x0, h - bottom + 6), label, fill=INK, font=font(11))
    d.line([left, sy(lo), w - right, sy(lo)], fill=INK)
    return img


def histogram(reference: Sequence[float], marks: Sequence[tuple[float, str, bool]], *, title: str,
              tails: tuple[float | None, float | None] | None = None, bins: int = 40,
              size: tuple[int, int] = (900, 260)) -> Image.Image:
    """Histogram of `reference` (grey bars) with each mark (value, label, flagged) as a vertical
    line, red when flagged; `tails` = (low, high) shades both rejection regions (below low and
    above high; None: no such region) and dashes their edges."""
    w, h = size
    left, right, top, bottom = 50, 20, 30, 38
    img = Image.new("RGB", size, BACKGROUND)
    d = ImageDraw.Draw(img)
    d.text((left, 8), title, fill=INK, font=font(14))
    values = [v for v in list(reference) + [m[0] for m in marks] + list(tails or []) if v is not None and math.isfinite(v)]
    if not values:
        d.text((left, h // 2), "nothing to show", fill=INK, font=font(13))
        return img
    x0, x1 = min(values), max(values)
    span = (x1 - x0) or 1.0
    x0, x1 = x0 - 0.03 * span, x1 + 0.03 * span
    sx = lambda v: left + (v - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    counts = [0] * bins
    for v in reference:
        if math.isfinite(v):
            counts[min(bins - 1, int((v - x0) / (x1 - x0) * bins))] += 1
    peak = max(counts) or 1
    base = h - bottom
    if tails is not None:
        lo, hi = (None if v is None else sx(v) for v in tails)
        if lo is not None:
            d.rectangle([left, top, max(left, lo), base], fill=TAIL)
        if hi is not None:
            d.rectangle([min(w - right, hi), top, w - right, base], fill=TAIL)
    for i, c in enumerate(counts):
        if c:
            bx0 = left + i * (w - left - right) / bins
            bx1 = left + (i + 1) * (w - left - right) / bins - 1
            d.rectangle([bx0, base - c / peak * (base - top - 14), bx1, base], fill=(185, 185, 185))
    d.line([left, base, w - right, base], fill=INK)
    for t in range(5):
        v = x0 + (x1 - x0) * t / 4
        d.text((sx(v) - 18, base + 5), f"{v:.4g}", fill=INK, font=font(11))
    for edge, words in zip(tails or (), ("atypically low", "atypically high")):
        if edge is None:
            continue
        x = sx(edge)
        for y in range(top, base, 8):
            d.line([x, y, x, min(base, y + 4)], fill=INK, width=2)
        d.text((x - 82 if words.endswith("low") else x + 3, top), words, fill=INK, font=font(11))
    for i, (v, label, flagged) in enumerate(marks):
        if not math.isfinite(v):
            continue
        x = sx(v)
        color = FLAG if flagged else OK
        d.line([x, top + 14, x, base], fill=color, width=2)
        d.text((x + 2, top + 14 + (i % 6) * 12), label, fill=color, font=font(10))
    if not reference:
        d.text((w - right - 260, top), "no reference distribution for this model", fill=INK, font=font(11))
    return img


def stack(images: Sequence[Image.Image], pad: int = 6) -> Image.Image:
    """Images top to bottom on white."""
    w = max(i.width for i in images)
    out = Image.new("RGB", (w, sum(i.height for i in images) + pad * (len(images) - 1)), BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height + pad
    return out
