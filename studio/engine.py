"""The studio's engine: every model loaded once, and every action a plain function.

Nothing here knows about Gradio. Actions take a model name, numbers, text and image file paths,
return images (PIL or files written under the engine's work folder) and tables, and raise
ValueError with a message meant for the user. The models are shared read-only between requests
(the operations run under inference mode and change no state), so the same arguments give the
same images for every user: randomness comes only from explicit seeds.

Seeds: an action draws its images in chunks of CHUNK; chunk c uses the seed derived from
(seed, c) (numpy SeedSequence), so a request is reproducible from its seed alone.
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from biva_core import BIVA, load_pretrained
from biva_core.plots import grid_image

from . import card, draw
from .images import Prepared, prepare, show_crop, to_pil, upscale
from .params import check_float, check_int, check_seed, default_ks, derive, parse_ks, parse_temperature
from .reference import Reference, percentile, quantile

Progress = Callable[[float, str], None]
CHUNK = 8                      # images per forward pass: progress granularity and seed unit
MAX_SAMPLES = 64
MAX_DRAWS = 16
MAX_UPLOADS = 64
MAX_K_SAMPLES = 64             # importance samples for the anomaly scores
EXAMPLES = Path(__file__).resolve().parent / "examples"
KEEP_OUTPUTS_S = 3600          # output folders older than this are removed


def _quiet(fraction: float, desc: str) -> None:
    pass


def cell(x: torch.Tensor) -> Image.Image:
    """An image tensor (C, H, W) as a grid cell, enlarged to at least 64 pixels high."""
    return upscale(to_pil(x), 64)


def chunks(n: int, verb: str, progress: Progress):
    """(chunk index, start, stop) over n items in steps of CHUNK, reporting progress before each."""
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        progress(start / n, f"{verb} images {start + 1}-{stop} of {n}")
        yield c, start, stop


@dataclass
class Entry:
    """One served model, or the reason it could not be loaded."""
    name: str
    directory: Path
    model: BIVA | None = None
    error: str | None = None
    face: bool = False
    reference: Reference | None = None
    reference_error: str | None = None
    cache: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        return self.model.config.L


def discover(root: Path) -> list[Path]:
    """Every subfolder of `root` holding a config.json; face models first, celeba64 first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "config.json").is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (not is_face(p.name), p.name != "celeba64", p.name))


def is_face(name: str, training: dict | None = None) -> bool:
    """A model of aligned faces: named after CelebA (or faces), or trained on the celeba data set."""
    return any(t in name.lower() for t in ("celeba", "face")) or (training or {}).get("dataset") == "celeba"


class Studio:
    """The loaded models and the actions on them."""

    def __init__(self, directories: Sequence[str | Path], *, device: str = "cpu", strict: bool = True,
                 workdir: str | Path | None = None):
        """Load every folder once. strict: a folder that does not load raises ValueError (the CLI's
        explicit --weights); otherwise it is kept as an entry whose every action explains why."""
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ValueError(f"device {device!r}: not a torch device (cpu, cuda, cuda:N)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        self.device = device
        self.entries: dict[str, Entry] = {}
        for directory in directories:
            directory = Path(directory)
            name = directory.name or str(directory)
            while name in self.entries:
                name += "+"
            entry = Entry(name, directory)
            try:
                entry.model = load_pretrained(directory, device)
            except (ValueError, OSError, RuntimeError) as err:  # CheckpointError is a ValueError
                if strict:
                    raise ValueError(f"cannot load weights {directory}: {err}") from None
                entry.error = str(err)
            else:
                entry.face = is_face(name, entry.model.training_info) and entry.model.config.image_shape[0] == 3
                try:
                    entry.reference = Reference.read(directory)
                except ValueError as err:
                    entry.reference_error = str(err)
            self.entries[name] = entry
        if not self.entries:
            raise ValueError("no model to serve: pass --weights DIR (a folder with config.json "
                             "and safetensors weights) or put such folders under weights/")
        self._workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="biva-studio-"))
        self._workdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ helpers

    @property
    def names(self) -> list[str]:
        """Loaded models first, in load order; broken ones after them."""
        return sorted(self.entries, key=lambda n: self.entries[n].error is not None)

    @property
    def workdir(self) -> Path:
        return self._workdir

    def entry(self, name: str) -> Entry:
        """The loaded model called `name`; a ValueError that says why not otherwise."""
        entry = self.entries.get(name)
        if entry is None:
            raise ValueError(f"unknown model {name!r}; this studio serves {', '.join(self.names)}")
        if entry.error is not None:
            raise ValueError(f"model {name!r} could not be loaded from {entry.directory}: {entry.error}")
        return entry

    def examples(self, name: str, *, ood: bool = False) -> list[str]:
        """Example files for a model: its folder's examples/, else the shipped faces (and, with
        ood, the out-of-distribution examples) for face models."""
        entry = self.entry(name)
        own = entry.directory / "examples"
        if own.is_dir():
            return sorted(str(p) for p in own.iterdir() if p.is_file() and not p.name.startswith("."))
        if not entry.face:
            return []
        pattern = ["celeba_test_*.png"] + (["ood_*.png"] if ood else ["celeba_aligned_*.jpg"])
        return [str(p) for pat in pattern for p in sorted(EXAMPLES.glob(pat))]

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _outdir(self, action: str) -> Path:
        """A fresh folder for one request's files; folders older than KEEP_OUTPUTS_S go (but not
        `kept/`, which holds the cached model cards' pictures)."""
        now = time.time()
        for old in self._workdir.iterdir():
            if old.name == "kept":
                continue
            try:
                if now - old.stat().st_mtime > KEEP_OUTPUTS_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        out = self._workdir / f"{action}-{uuid.uuid4().hex[:10]}"
        out.mkdir()
        return out

    def _prepare_all(self, entry: Entry, files: Sequence[str | Path] | str | None, *,
                     limit: int = MAX_UPLOADS) -> tuple[list[Prepared], list[str]]:
        """(the images that decoded, a message per file that did not). All failing is an error."""
        files = [files] if isinstance(files, (str, Path)) else list(files or [])
        files = [f for f in files if f]
        if not files:
            raise ValueError("no image given: upload at least one image file")
        if len(files) > limit:
            raise ValueError(f"{len(files)} files uploaded; at most {limit} at a time")
        ok, skipped = [], []
        for f in files:
            try:
                ok.append(prepare(f, entry.model.config, face=entry.face))
            except ValueError as err:
                skipped.append(str(err))
        if not ok:
            raise ValueError("; ".join(skipped))
        return ok, skipped

    def _one(self, entry: Entry, file: str | Path | None, what: str = "image") -> Prepared:
        if not file:
            raise ValueError(f"no {what} given: upload an image file")
        return prepare(file, entry.model.config, face=entry.face)

    # ------------------------------------------------------------------ 1 sample

    def sample(self, name: str, n: int = 16, temperature: str | float = "1.0", seed: int | None = 0,
               progress: Progress = _quiet) -> "Samples":
        """n images from the prior, every prior scale times the temperature (one value or one per
        level, bottom-up). Writes each image as a lossless PNG, a grid and a zip of them all."""
        entry = self.entry(name)
        n = check_int("count", n, 1, MAX_SAMPLES)
        temps = parse_temperature(temperature, entry.L)
        seed = check_seed(seed)
        out = self._outdir("sample")
        images: list[torch.Tensor] = []
        for c, start, stop in chunks(n, "sampling", progress):
            images.append(entry.model.sample(stop - start, temperature=temps, seed=derive(seed, c)).cpu())
        x = torch.cat(images)
        paths = []
        for i, img in enumerate(x):
            paths.append(out / f"{name}_seed{seed}_{i:02d}.png")
            to_pil(img).save(paths[-1])
        grid = out / f"{name}_seed{seed}_grid.png"
        grid_image(x).save(grid)
        settings = {"model": name, "count": n, "temperature": temps, "seed": seed}
        archive = out / f"{name}_seed{seed}_samples.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            for p in [*paths, grid]:
                z.write(p, p.name)
            z.writestr("settings.json", json.dumps(settings, indent=2))
        progress(1.0, "done")
        return Samples([str(p) for p in paths], str(grid), str(archive), seed, temps)

    # ------------------------------------------------------------------ 2 reconstruct

    def reconstruct(self, name: str, files: Sequence[str] | str | None,
                    progress: Progress = _quiet) -> "Reconstructions":
        """Each image's crop, model input and reconstruction (every z at its posterior mean), with
        the single-sample ELBO in bits/dim (seeded, so it is the same every time)."""
        entry = self.entry(name)
        preps, skipped = self._prepare_all(entry, files)
        out = self._outdir("reconstruct")
        panels, rows = [], []
        for c, start, stop in chunks(len(preps), "reconstructing", progress):
            batch = preps[start:stop]
            x = torch.stack([p.x for p in batch])
            recon = entry.model.reconstruct(x).cpu()
            bound = entry.model.elbo(x, seed=derive(0, c))
            for i, (p, r) in enumerate(zip(batch, recon)):
                bpd, nats = float(bound["bpd"][i]), float(bound["elbo"][i])
                caption = f"{p.name}: {bpd:.3f} bits/dim"
                panel = draw.side_by_side([show_crop(p, 128), upscale(to_pil(p.x), 128), upscale(to_pil(r), 128)])
                path = out / f"{start + i:02d}_{Path(p.name).stem[:40]}.png"
                panel.save(path)
                panels.append((str(path), caption))
                size = f"{p.original.width}x{p.original.height}"
                rows.append([p.name, size, p.rule, round(bpd, 4), round(nats, 1)])
        progress(1.0, "done")
        return Reconstructions(panels, rows, skipped)

    # ------------------------------------------------------------------ 3 hierarchy

    def hierarchy(self, name: str, file: str | None, ks: Sequence[int] | str | None = None, draws: int = 4,
                  temperature: str | float = "1.0", seed: int | None = 0,
                  progress: Progress = _quiet) -> "Hierarchy":
        """One row per k: keep z_{>k} from q(. | x) and redraw the levels <= k `draws` times
        (k = 0 reconstructs, k = L samples afresh). Redrawn prior scales times the temperature."""
        entry = self.entry(name)
        L = entry.L
        ks = parse_ks(ks, L) if ks not in (None, "", []) else default_ks(L)
        draws = check_int("draws per row", draws, 1, MAX_DRAWS)
        temps = parse_temperature(temperature, L)
        seed = check_seed(seed)
        prep = self._one(entry, file)
        x = prep.x[None]
        rows = []
        for i, k in enumerate(ks):
            progress(i / len(ks), f"redrawing levels <= {k} ({i + 1} of {len(ks)} rows)")
            imgs = entry.model.resample(x, k, draws, temperature=temps, seed=derive(seed, k))[0].cpu()
            label = f"k={k}" + (" recon" if k == 0 else " sample" if k == L else "")
            rows.append((label, [cell(prep.x)] + [cell(t) for t in imgs]))
        out = self._outdir("hierarchy")
        grid = draw.labelled_grid(rows, header=["input"] + [f"draw {j + 1}" for j in range(draws)])
        path = out / f"{name}_hierarchy_seed{seed}.png"
        grid.save(path)
        crop = out / "crop.png"
        draw.side_by_side([show_crop(prep, 128), upscale(to_pil(prep.x), 128)], caption=prep.rule).save(crop)
        progress(1.0, "done")
        return Hierarchy(str(path), str(crop), ks, seed)

    def mix(self, name: str, file_a: str | None, file_b: str | None, ks: Sequence[int] | str | None = None,
            progress: Progress = _quiet) -> str:
        """For each k: z_{>k} from image A, z_{<=k} from image B's posterior given A's top (all
        posterior means). k = 0 reconstructs A, k = L reconstructs B. Returns the grid's path."""
        entry = self.entry(name)
        ks = parse_ks(ks, entry.L) if ks not in (None, "", []) else default_ks(entry.L)
        a, b = self._one(entry, file_a, "image A"), self._one(entry, file_b, "image B")
        cells = [cell(a.x)]
        for i, k in enumerate(ks):
            progress(i / len(ks), f"mixing at k={k} ({i + 1} of {len(ks)})")
            cells.append(cell(entry.model.mix(a.x[None], b.x[None], k)[0]))
        cells.append(cell(b.x))
        grid = draw.labelled_grid([("A top\nB below", cells)], header=["A"] + [f"k={k}" for k in ks] + ["B"],
                                  label_width=80)
        path = self._outdir("mix") / f"{name}_mix.png"
        grid.save(path)
        progress(1.0, "done")
        return str(path)

    # ------------------------------------------------------------------ 4 anomaly

    def anomaly(self, name: str, files: Sequence[str] | str | None, k: int = 1, K: int = 1,
                threshold: float = 95.0, seed: int | None = 0, progress: Progress = _quiet) -> "Anomalies":
        """L^{>0}, L^{>k}, LLR^{>k} = L^{>0} - L^{>k} (nats, K importance samples) and bits/dim
        per image, with percentiles against the model's reference.json. An image is flagged when
        its LLR^{>k} exceeds the reference's `threshold`-th percentile."""
        entry = self.entry(name)
        L = entry.L
        k = check_int("k", k, 1, L - 1)
        K = check_int("K (importance samples)", K, 1, MAX_K_SAMPLES)
        threshold = check_float("threshold percentile", threshold, 0.0, 100.0)
        seed = check_seed(seed)
        preps, skipped = self._prepare_all(entry, files)
        scores = {"l0": [], "lk": [], "llr": [], "bpd": []}
        for c, start, stop in chunks(len(preps), "scoring", progress):
            x = torch.stack([p.x for p in preps[start:stop]])
            s = entry.model.scores(x, [k], K=K, seed=derive(seed, c))
            for key, v in (("l0", s.l0), ("lk", s.lk[k]), ("llr", s.llr[k]), ("bpd", s.bpd)):
                scores[key] += v.cpu().tolist()
        ref = entry.reference
        ref_llr = ref.sorted_llr(k) if ref else None
        ref_bpd = sorted(ref.bpd) if ref else None
        cut = quantile(ref_llr, threshold) if ref_llr else None
        rows, marks_llr, marks_bpd = [], [], []
        for i, p in enumerate(preps):
            llr, bpd = scores["llr"][i], scores["bpd"][i]
            flagged = cut is not None and llr > cut
            rows.append([p.name, round(scores["l0"][i], 1), round(scores["lk"][i], 1), round(llr, 1), round(bpd, 4),
                         round(percentile(ref_llr, llr), 1) if ref_llr else None,
                         round(percentile(ref_bpd, bpd), 1) if ref_bpd else None,
                         "yes" if flagged else ("no" if cut is not None else "n/a")])
            marks_llr.append((llr, str(i + 1), flagged))
            marks_bpd.append((bpd, str(i + 1), flagged))
        headers = anomaly_headers(k)
        out = self._outdir("anomaly")
        plot = draw.stack([
            draw.histogram(ref_llr or [], marks_llr, threshold=cut,
                           title=f"LLR>{k} (nats): reference {self._ref_words(entry)}; "
                                 "uploads numbered as in the table"),
            draw.histogram(ref_bpd or [], marks_bpd, title="bits/dim of L>0: reference and uploads")])
        plot_path = out / f"{name}_anomaly_k{k}.png"
        plot.save(plot_path)
        csv_path = out / f"{name}_anomaly_k{k}.csv"
        write_csv(csv_path, headers, rows)
        notes = [f"{sum(r[-1] == 'yes' for r in rows)} of {len(rows)} images flagged "
                 f"(LLR>{k} above the reference's {threshold:g}th percentile, {cut:.1f} nats)." if cut is not None
                 else "No reference distribution for this k: percentiles and flags need the model's reference.json."]
        if ref and ref.K != K:
            notes.append(f"The reference was computed with K={ref.K}; scores with K={K} are not exactly comparable.")
        notes += [f"Skipped {s}" for s in skipped]
        progress(1.0, "done")
        return Anomalies(headers, rows, str(plot_path), str(csv_path), " ".join(notes), skipped)

    @staticmethod
    def _ref_words(entry: Entry) -> str:
        ref = entry.reference
        return f"({ref.images} {ref.split} images, K={ref.K})" if ref else "(none)"

    # ------------------------------------------------------------------ 5 model

    def model_card(self, name: str) -> card.Card:
        """Config, parameter count, training summary, and the run's logs when shipped (cached)."""
        entry = self.entry(name)
        if "card" not in entry.cache:
            ref = entry.reference
            words = (f"{ref.images} images of the {ref.split} split, K={ref.K}. {ref.note}" if ref
                     else f"unreadable: {entry.reference_error}" if entry.reference_error else "absent")
            out = self._workdir / "kept" / f"card-{uuid.uuid4().hex[:10]}"
            out.mkdir(parents=True)
            entry.cache["card"] = card.card(name, entry.directory, entry.model, words, out)
        return entry.cache["card"]

    def model_latents(self, name: str, files: Sequence[str] | None = None,
                      progress: Progress = _quiet) -> card.LatentReport:
        """Per-level KL and active units over the uploaded images, else the model's examples,
        else 16 of its own samples (seed 0)."""
        entry = self.entry(name)
        out = self._outdir("latents")
        progress(0.0, "encoding the images")
        if files:
            preps, _ = self._prepare_all(entry, files)
            return card.latent_report(entry.model, preps, "uploaded images", out)
        examples = self.examples(name)
        if examples:
            preps, _ = self._prepare_all(entry, examples)
            return card.latent_report(entry.model, preps, "example images", out)
        x = entry.model.sample(16, seed=0).cpu()
        return card.latent_report(entry.model, x, "samples of the model (no example images)", out)


# ---------------------------------------------------------------------- results


@dataclass
class Samples:
    paths: list[str]                 # one lossless PNG per image
    grid: str
    archive: str                     # zip of the PNGs, the grid and settings.json
    seed: int
    temperature: float | list[float]


@dataclass
class Reconstructions:
    panels: list[tuple[str, str]]    # (crop | input | reconstruction image, caption)
    rows: list[list]                 # image, size, crop, bits/dim, ELBO nats
    skipped: list[str]
    headers: tuple[str, ...] = ("image", "original size", "preprocessing", "bits/dim", "ELBO (nats)")


@dataclass
class Hierarchy:
    grid: str
    crop: str
    ks: list[int]
    seed: int


@dataclass
class Anomalies:
    headers: list[str]
    rows: list[list]
    plot: str
    csv: str
    note: str
    skipped: list[str]


def anomaly_headers(k: int) -> list[str]:
    return ["image", "L>0 (nats)", f"L>{k} (nats)", f"LLR>{k} (nats)", "bits/dim",
            f"LLR>{k} percentile", "bits/dim percentile", "flagged"]


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
