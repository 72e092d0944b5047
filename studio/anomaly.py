"""The Anomaly tab's report, from the detector's verdicts (biva_core.detect) to what the page shows.

First what a person reads in five seconds, one row per image: the image beside the map of where
its bits go, the verdict in words ("typical face", "atypically simple for this model"), p, and the
statistic that decided (`summary`, `summary_html`). Then, one click away, everything else: a
column per statistic (`headers`, `rows`, the CSV), the reference's histograms with the images
marked on them (`histograms`) and a sentence on how the test was made (`note`).
"""
from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from biva_core.data.prepare import Prepared
from biva_core.detect import Detector, Finding, Reference, Verdicts
from biva_core.model import BIVA, PRIOR_WORDS

from . import draw
from .images import to_pil, upscale


@dataclass
class Anomalies:
    headers: list[str]
    rows: list[list]
    plot: str
    csv: str
    note: str
    skipped: list[str]
    maps: list[tuple[str, str]] = field(default_factory=list)   # (pixel-map panel, caption)
    summary: list[dict] = field(default_factory=list)          # per image: name, verdict, p, decided_by, flagged
    html: str = ""                                              # the summary as the page shows it


def headers(ks: Sequence[int], codecs: Sequence[str] = (), density: bool = False) -> list[str]:
    """The detail table's columns; codecs: the complexity statistics' when the detector tests them;
    density: the detector combines by the joint density (a column for the atypicality)."""
    return ["image", "verdict", "p", "-log10 p", "p bits/dim (side)", *[f"p LLR>{k} (side)" for k in ks],
            *[f"p bits/dim - {c} (side)" for c in codecs], "bits/dim", *[f"LLR>{k} (nats)" for k in ks],
            "L>0 (nats)", *[f"L>{k} (nats)" for k in ks], *[f"bits/dim - {c} bits/dim" for c in codecs],
            *(["atypicality"] if density else [])]


def rows(names: Sequence[str], s: dict, v: Verdicts | None, ref: Reference | None, ks: Sequence[int],
         classes: Sequence[str] = ()) -> list[list]:
    """One detail row per image (the columns of `headers`); s: `scores_per_image`'s output; without
    a reference (v None) the scores alone."""
    codecs = v.codecs if v is not None else ()
    sides = v.tails(ref) if v is not None else None
    out = []
    for i, name in enumerate(names):
        ok = v is not None
        out.append([name, ("ANOMALY" if v.flagged[i] else "typical") if ok else "n/a",
                    float(f"{v.p[i]:.3g}") if ok else None,
                    round(float(v.score[i]), 2) if ok else None,
                    f"{v.p_bpd[i]:.3g} ({sides[0][i]})" if ok else None,
                    *[f"{v.p_llr[j][i]:.3g} ({sides[1][j][i]})" if ok else None for j in ks],
                    *[f"{v.p_cc[c][i]:.3g} ({sides[2][c][i]})" for c in codecs],
                    round(float(s["bpd"][i]), 4), *[round(float(s["LLR_gt_k"][j][i]), 1) for j in ks],
                    round(float(s["L_gt_0"][i]), 1), *[round(float(s["L_gt_k"][j][i]), 1) for j in ks],
                    *[round(float(v.cc[c][i]), 4) for c in codecs],
                    *([round(float(v.atypicality[i]), 2)] if ok and v.atypicality is not None else []),
                    *classes[i:i + 1]])
    return out


def histograms(s: dict, v: Verdicts | None, detector: Detector | None, ref: Reference | None,
               ks: Sequence[int], alpha: float, words: str) -> Image.Image:
    """The reference's distribution of each statistic with the images marked on it (numbered as in
    the tables; red: flagged), the joint atypicality on top when the detector combines by density."""
    n = len(s["bpd"])
    flagged = [bool(v.flagged[i]) if v is not None else False for i in range(n)]
    marks = lambda values: [(float(values[i]), str(i + 1), flagged[i]) for i in range(n)]  # noqa: E731
    codecs = v.codecs if v is not None else ()
    density = v is not None and v.atypicality is not None
    # Bonferroni: one statistic alone flags beyond these quantiles; density: one alone is atypical at alpha
    q = alpha / 2 if density else alpha / (2 * (detector.statistics if detector else 2))
    tails = lambda r: tuple(np.quantile(r, [q, 1 - q])) if r is not None else None  # noqa: E731
    shaded = "shaded: atypical alone at alpha" if density else "shaded: where one statistic alone flags"
    panels = []
    if density:   # on a log scale above the reference's least atypical image: noise lies thousands beyond
        a0 = float(detector.joint.ref_atypicality.min())
        lift = lambda a: float(np.sign(a - a0) * np.log10(1 + abs(a - a0)))  # noqa: E731
        joint = [lift(a) for a in detector.joint.ref_atypicality]
        panels.append(draw.histogram(joint, [(lift(a), label, f) for a, label, f in marks(v.atypicality)],
                                     tails=(None, float(np.quantile(joint, 1 - alpha))),
                                     title=f"atypicality, all statistics at once (log10(1 + a - min)): reference "
                                           f"{words}, each left out"))
    panels.append(draw.histogram(ref.bpd.tolist() if ref else [], marks(s["bpd"]),
                                 tails=tails(ref.bpd) if ref else None,
                                 title=f"bits/dim of L>0: reference {words} and the images (numbered as in the table)"))
    panels += [draw.histogram(ref.llr[j].tolist() if ref else [], marks(s["LLR_gt_k"][j]),
                              tails=tails(ref.llr[j]) if ref else None,
                              title=f"LLR>{j} (nats): reference {words}; {shaded}") for j in ks]
    panels += [draw.histogram((ref.bpd - ref.compressed[c]).tolist(), marks(v.cc[c]),
                              tails=tails(ref.bpd - ref.compressed[c]),
                              title=f"bits/dim - {c} bits/dim (the image's complexity taken out): reference {words}")
               for c in codecs]
    return draw.stack(panels)


def note(v: Verdicts | None, ref: Reference | None, ks: Sequence[int], alpha: float, skipped: Sequence[str]) -> str:
    """How the test was made, in one paragraph (Markdown)."""
    if v is None:
        words = ["No reference distribution (reference.json) for this model: scores only, no verdicts."]
    else:
        llrs = ", ".join(f"LLR>{j}" for j in ks) + "".join(f", bits/dim - {c} bits/dim" for c in v.codecs)
        how = "p of their joint density" if v.atypicality is not None else "combined two-sided p"
        words = [f"**{int(v.flagged.sum())} of {len(v.p)} images flagged** ({how} < {alpha:g}: "
                 f"bits/dim, {llrs}, each atypically low or high against {ref.images} {ref.split} images, "
                 f"K={ref.K}{f'; LLR with z<=k {PRIOR_WORDS[ref.prior]}' if ref.prior == 'mode' else ''})."]
    return " ".join(words + [f"Skipped {s}" for s in skipped])


def summary(names: Sequence[str], v: Verdicts | None, found: Sequence[Finding]) -> list[dict]:
    """Per image what the five-second view shows: name, verdict in words, p, the deciding statistic."""
    if v is None:
        return [{"image": n, "flagged": False, "verdict": "no reference: no verdict", "p": None, "decided_by": ""}
                for n in names]
    return [{"image": n, "flagged": f.flagged, "verdict": f.words, "p": float(f"{v.p[i]:.3g}"),
             "decided_by": f.statistic} for i, (n, f) in enumerate(zip(names, found))]


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def summary_html(items: Sequence[dict], pictures: Sequence[Image.Image]) -> str:
    """The summary as a table: #, the picture (the image, with its pixel map beside it when made),
    the verdict (red when flagged), p and the deciding statistic. The pictures travel inside the
    page (data URIs), so no file must stay served for it."""
    head = "<tr><th>#</th><th>image</th><th>verdict</th><th>p</th><th>decided by</th></tr>"
    body = []
    for i, (item, picture) in enumerate(zip(items, pictures)):
        colour = "#c62828" if item["flagged"] else "#1b5e20"
        mark = "ANOMALY: " if item["flagged"] else ""
        p = "" if item["p"] is None else f"{item['p']:.3g}"
        body.append(
            f"<tr class='anom-row' data-flagged='{str(item['flagged']).lower()}'><td>{i + 1}</td>"
            f"<td><img class='pixelated' alt='{html.escape(item['image'])}' src='{_data_uri(picture)}'>"
            f"<div class='anom-name'>{html.escape(item['image'])}</div></td>"
            f"<td style='color:{colour};font-weight:600'>{mark}{html.escape(item['verdict'])}</td>"
            f"<td>{p}</td><td>{html.escape(item['decided_by'] or '-')}</td></tr>")
    return f"<table class='anom-summary'>{head}{''.join(body)}</table>"


def pixel_panel(model: BIVA, p: Prepared, k: int, seed: int, path: Path, prior: str = "sample") -> tuple[Path, str]:
    """input | bits per pixel with z from the posterior | with z_{<=k} from the prior (a draw, or
    its mean with prior="mode"): the parts of the picture that the levels above k cannot explain
    light up on the right."""
    x = p.x[None]
    post = model.pixel_map(x, 0, seed=seed)
    low = model.pixel_map(x, k, seed=seed, prior=prior)
    a, b = post["bits"][0].cpu().numpy(), low["bits"][0].cpu().numpy()
    vmax = float(np.quantile(np.concatenate([a.ravel(), b.ravel()]), 0.99)) or 1.0
    panel = draw.side_by_side([upscale(to_pil(p.x), 128), draw.heat(a, vmax), draw.heat(b, vmax),
                               draw.colour_bar(vmax)],
                              titles=["input", "bits/pixel, z from q", f"bits/pixel, z<={k} from p", "scale"])
    panel.save(path)
    caption = (f"{p.name}: input | bits per pixel, z from q: {a.sum():.0f} + KL {float(post['kl_bits'][0]):.0f} "
               f"bits | z<={k} {PRIOR_WORDS[prior]}: {b.sum():.0f} + KL>{k} {float(low['kl_bits'][0]):.0f} bits")
    return path, caption


def write_csv(path: Path, columns: Sequence[str], table: Sequence[Sequence]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in table)
