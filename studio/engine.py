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

from biva_core import BIVA
from biva_core.data.prepare import Prepared, header_pixels, prepare
from biva_core.model import PRIOR_WORDS
from biva_core.io.plots import grid_image

from . import anomaly as report
from . import card, draw
from .models import Entry, examples, open_entry
from .runs import RunsFolder, RunView
from .images import show_crop, to_pil, upscale
from .params import check_float, check_int, check_seed, default_ks, derive, parse_ks, parse_temperature
from biva_core.detect import ALPHA, Detector, as_ks, findings, scores_per_image

Progress = Callable[[float, str], None]
CHUNK = 8                      # images per forward pass: progress granularity and seed unit
MAX_SAMPLES = 64
MAX_DRAWS = 16
MAX_UPLOADS = 64
MAX_K_SAMPLES = 64             # importance samples for the anomaly scores
MAX_REQUEST_PIXELS = 160_000_000  # the uploads of one request together (4 at the 40 MP limit)
TEMPERATURE = 0.8              # the default prior temperature of every tab that draws from p
KEEP_OUTPUTS_S = 3600          # output folders older than this are removed
GRADIO_FOLDER = "gradio"       # the CLI's Gradio temp folder (uploads, served files) inside the work folder


def _quiet(fraction: float, desc: str) -> None:
    pass


CELL = 128                     # grid cells are at least this many pixels high


def cell(x: torch.Tensor) -> Image.Image:
    """An image tensor (C, H, W) as a grid cell, enlarged (nearest neighbour) to at least CELL
    pixels high."""
    return upscale(to_pil(x), CELL)


def chunks(n: int, verb: str, progress: Progress):
    """(chunk index, start, stop) over n items in steps of CHUNK, reporting progress before each."""
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        progress(start / n, f"{verb} images {start + 1}-{stop} of {n}")
        yield c, start, stop


class Studio:
    """The loaded models and the actions on them."""

    def __init__(self, directories: Sequence[str | Path], *, device: str = "cpu", strict: bool = True,
                 workdir: str | Path | None = None, runs: str | Path | None = None):
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
            self.add(directory, strict=strict)
        if not self.entries:
            raise ValueError("no model to serve: pass --weights DIR (a folder with config.json "
                             "and safetensors weights) or put such folders under weights/")
        self._workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="biva-studio-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.runs_folder = RunsFolder(runs, self._workdir / "kept")   # the Runs tab's folder (read only)

    def add(self, directory: str | Path, name: str | None = None, *, strict: bool = True,
            replace: bool = False) -> str:
        """Load one pretrained folder as a served model; returns its name (the folder's, made
        unique). strict: a folder that does not load raises ValueError; otherwise its entry
        explains why. replace: reload under an existing name (a run's newer best weights)."""
        directory = Path(directory)
        name = name or directory.name or str(directory)
        while name in self.entries and not replace:
            name += "+"
        entry = open_entry(directory, name, self.device, strict=strict)
        self.entries[name] = entry
        return name

    def runs(self) -> list[str]:
        """The training runs under the runs folder, newest first (empty without one)."""
        return self.runs_folder.list()

    def run_view(self, folder: str | None) -> RunView:
        """A run as the Runs tab shows it (runs.RunsFolder.view)."""
        return self.runs_folder.view(folder)

    def load_run(self, folder: str | None) -> str:
        """Serve a run's best weights so far (config.json + safetensors) as the model "run <name>",
        replacing an earlier load of the same run; returns the model's name."""
        path = self.runs_folder.folder(folder)
        if not (path / "config.json").is_file() or not any(path.glob("model*.safetensors")):
            raise ValueError(f"run {path.name} has no weights yet: train.py writes them at its first validation")
        return self.add(path, f"run {path.name}", replace=True)

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
        """Example files for a model: its folder's examples/, else the shipped faces for face
        models; with ood, the out-of-distribution examples (files named ood_*) as well."""
        return examples(self.entry(name), ood=ood)

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _outdir(self, action: str) -> Path:
        """A fresh folder for one request's files; folders older than KEEP_OUTPUTS_S go (but not
        `kept/`, which holds the cached model cards' pictures, nor Gradio's own folder)."""
        now = time.time()
        for old in self._workdir.iterdir():
            if old.name in ("kept", GRADIO_FOLDER):
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
        total = sum(header_pixels(f) for f in files)
        if total > MAX_REQUEST_PIXELS:
            raise ValueError(f"the {len(files)} uploads hold {total / 1e6:.0f} megapixels together; one request "
                             f"takes at most {MAX_REQUEST_PIXELS / 1e6:.0f}: send fewer or smaller images")
        ok, skipped = [], []
        for f in files:
            try:
                ok.append(prepare(f, entry.model.config, face=entry.face, binarize=entry.binarize))
            except ValueError as err:
                skipped.append(str(err))
        if not ok:
            raise ValueError("; ".join(skipped))
        return ok, skipped

    def _one(self, entry: Entry, file: str | Path | None, what: str = "image") -> Prepared:
        if not file:
            raise ValueError(f"no {what} given: upload an image file")
        return prepare(file, entry.model.config, face=entry.face, binarize=entry.binarize)

    # ------------------------------------------------------------------ 1 sample

    def sample(self, name: str, n: int = 16, temperature: str | float = TEMPERATURE, seed: int | None = 0,
               progress: Progress = _quiet, label: int | str | None = None) -> "Samples":
        """n images from the prior, every prior scale times the temperature (one value or one per
        level, bottom-up). Writes each image as a lossless PNG, a grid and a zip of them all.
        A model with classes draws n images of every class, one row per class, or of the one class
        `label` (a class number; None or "all": every class). A class draws the same images
        whether alone or among all."""
        entry = self.entry(name)
        n = check_int("count", n, 1, MAX_SAMPLES)
        temps = parse_temperature(temperature, entry.L)
        seed = check_seed(seed)
        C = entry.model.config.classes
        if label in (None, "", "all"):
            label = None
        elif not C:
            raise ValueError(f"{name} has no classes: leave the class empty (or all)")
        else:
            label = check_int("class", label, 0, C - 1)
        out = self._outdir("sample")
        classes = [label] if label is not None else (list(range(C)) or [None])
        images: list[torch.Tensor] = []
        for y in classes:
            for c, start, stop in chunks(n, "sampling" if y is None else f"sampling class {y}", progress):
                images.append(entry.model.sample(stop - start, temperature=temps, label=y,
                                                 seed=derive(seed, c) if y is None else derive(seed, c, y)).cpu())
        x = torch.cat(images)
        paths = []
        for i, img in enumerate(x):
            tag = "" if classes[0] is None else f"class{classes[i // n]}_"
            paths.append(out / f"{name}_seed{seed}_{tag}{i % n if tag else i:02d}.png")
            to_pil(img).save(paths[-1])
        grid = out / f"{name}_seed{seed}_grid.png"
        grid_image(x, nrow=n if classes[0] is not None else None).save(grid)
        rows = []
        for j, y in enumerate(classes if classes[0] is not None else []):
            rows.append((str(out / f"{name}_seed{seed}_class{y}_row.png"), f"class {y}"))
            # at most 8 a line: a row stays tall enough to read when the page fits it to its width
            upscale(grid_image(x[j * n:(j + 1) * n], nrow=min(n, 8)), 128).save(rows[-1][0])
        settings = {"model": name, "count": n, "temperature": temps, "seed": seed,
                    **({"class": label} if label is not None else {})}
        archive = out / f"{name}_seed{seed}_samples.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            for p in [*paths, grid]:
                z.write(p, p.name)
            z.writestr("settings.json", json.dumps(settings, indent=2))
        progress(1.0, "done")
        return Samples([str(p) for p in paths], str(grid), str(archive), seed, temps, rows)

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
            classes = class_words(entry.model, x)
            for i, (p, r) in enumerate(zip(batch, recon)):
                bpd, nats = float(bound["bpd"][i]), float(bound["elbo"][i])
                caption = f"{p.name}: {bpd:.3f} bits/dim" + (f", q(y | x): {classes[i]}" if classes else "")
                panel = draw.side_by_side([show_crop(p, 128), upscale(to_pil(p.x), 128), upscale(to_pil(r), 128)])
                path = out / f"{start + i:02d}_{Path(p.name).stem[:40]}.png"
                panel.save(path)
                panels.append((str(path), caption))
                size = f"{p.original.width}x{p.original.height}"
                rows.append([p.name, size, p.rule, round(bpd, 4), round(nats, 1), *classes[i:i + 1]])
        progress(1.0, "done")
        headers = Reconstructions.headers + (("class: q(y | x)",) if entry.model.config.classes else ())
        return Reconstructions(panels, rows, skipped, headers)

    # ------------------------------------------------------------------ 3 hierarchy

    def hierarchy(self, name: str, file: str | None, ks: Sequence[int] | str | None = None, draws: int = 4,
                  temperature: str | float = TEMPERATURE, seed: int | None = 0,
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

    def interpolate(self, name: str, file_a: str | None, file_b: str | None, k: int = 0, steps: int = 8,
                    temperature: str | float = 0.0, seed: int | None = 0, progress: Progress = _quiet) -> str:
        """A row from A to B: z above level k spherically interpolated between their posterior
        means, the levels <= k from the prior at the temperature (0: its means). Returns the grid."""
        entry = self.entry(name)
        k = check_int("k", k, 0, entry.L - 1)
        steps = check_int("steps", steps, 2, MAX_DRAWS)
        temps = parse_temperature(temperature, entry.L, allow_zero=True)
        seed = check_seed(seed)
        a, b = self._one(entry, file_a, "image A"), self._one(entry, file_b, "image B")
        progress(0.0, f"interpolating at k={k}")
        path = entry.model.interpolate(a.x[None], b.x[None], k, steps, temperature=temps, seed=seed).cpu()
        cells = [cell(a.x)] + [cell(t) for t in path] + [cell(b.x)]
        header = ["A"] + [f"t={t:.2f}" for t in torch.linspace(0, 1, steps).tolist()] + ["B"]
        grid = draw.labelled_grid([(f"z>{k} from A to B", cells)], header=header, label_width=110)
        out = self._outdir("interpolate") / f"{name}_interpolate_k{k}.png"
        grid.save(out)
        progress(1.0, "done")
        return str(out)

    # ------------------------------------------------------------------ 4 anomaly

    def anomaly(self, name: str, files: Sequence[str] | str | None, k=None, K: int | None = None,
                alpha: float = ALPHA, seed: int | None = 0, maps: bool = True,
                progress: Progress = _quiet, complexity=None, combine: str | None = None) -> report.Anomalies:
        """The detector of spec section 6 (biva_core.detect) for each image: two-sided p-values of
        bits/dim and LLR^{>k} (k: one level or several, e.g. [1, 19] or "1, 19") against the model's
        reference.json (made with K importance samples: another K is refused), combined; flagged when
        p < alpha, ranked by -log10 p; with `complexity` (a codec or several; default: the reference's)
        also bits/dim - each codec's bits/dim; combine: Bonferroni or the reference's joint density
        (default: the reference's). Without a reference the scores alone. With `maps`, where in the image the bits go
        (`pixel_map`, at the largest k)."""
        entry = self.entry(name)
        L, ref = entry.L, entry.reference
        try:
            ks = as_ks(k) or (ref.default_ks if ref else (1,))
        except ValueError:
            raise ValueError(f"k must be whole numbers between 1 and {L - 1}, got {k!r}") from None
        ks = tuple(check_int("k", j, 1, L - 1) for j in ks)
        if K in (None, "") or (not isinstance(K, str) and K == 0):  # 0 or nothing: the reference's K
            K = ref.K if ref else 1
        K = check_int("K (importance samples)", K, 1, MAX_K_SAMPLES)
        prior = ref.prior if ref else "sample"   # how L^{>k} takes z_{<=k}: as the reference did
        alpha = check_float("alpha", alpha, 1e-6, 0.5)
        seed = check_seed(seed)
        detector = None
        if ref is not None:   # refuses a k the reference holds no LLR>k for, naming those it holds
            detector = Detector(ref, k=ks, alpha=alpha, complexity=complexity, combine=combine)
            detector.check_K(K)
        preps, skipped = self._prepare_all(entry, files)
        out = self._outdir("anomaly")
        n, t0 = len(preps), time.time()

        def scored(done: int, total: int) -> None:
            left = f", about {(time.time() - t0) / done * (total - done):.0f} s left" if done < total else ""
            progress(done / total * (0.7 if maps else 1.0), f"scored {done} of {total} images{left}")

        progress(0.0, f"scoring {n} images")
        x = torch.stack([p.x for p in preps])
        # one image a batch, image i with its own seed: an image's scores do not depend on the others
        s = scores_per_image(entry.model, x, list(ks), K, batch_size=1, seed_of=lambda i: derive(seed, i),
                             elbo=False, on_batch=scored, prior=prior)
        classes = [w for p in preps for w in class_words(entry.model, p.x[None])]
        panels = []
        if maps:
            for i, p in enumerate(preps):
                progress(0.7 + 0.3 * i / n, f"pixel map {i + 1} of {n}")
                panels.append(report.pixel_panel(entry.model, p, ks[-1], derive(seed, i, 1), out / f"{i:02d}_map.png", prior))
        v = detector.test_scores(s) if detector is not None else None
        names = [p.name for p in preps]
        stem = out / f"{name}_anomaly_k{'_'.join(map(str, ks))}"
        plot_path, csv_path = stem.with_suffix(".png"), stem.with_suffix(".csv")
        report.histograms(s, v, detector, ref, ks, alpha, self._ref_words(entry)).save(plot_path)
        columns = report.headers(ks, v.codecs if v is not None else (), v is not None and v.atypicality is not None)
        columns += ["class: q(y | x)"] if entry.model.config.classes else []
        table = report.rows(names, s, v, ref, ks, classes)
        report.write_csv(csv_path, columns, table)
        items = report.summary(names, v, findings(v, ref, entry.noun) if v is not None else [])
        pictures = [Image.open(path) for path, _ in panels] or [upscale(to_pil(p.x), 96) for p in preps]
        progress(1.0, "done")
        return report.Anomalies(columns, table, str(plot_path), str(csv_path), report.note(v, ref, ks, alpha, skipped),
                                skipped, [(str(path), caption) for path, caption in panels], items,
                                report.summary_html(items, pictures))

    @staticmethod
    def _ref_words(entry: Entry) -> str:
        ref = entry.reference
        mode = f", z<=k {PRIOR_WORDS['mode']}" if ref and ref.prior == "mode" else ""
        return f"({ref.images} {ref.split} images, K={ref.K}{mode})" if ref else "(none)"

    def detector_defaults(self, name: str) -> dict:
        """The Anomaly tab's defaults for a model: the reference's k, K and alpha and its ks."""
        entry = self.entry(name)
        ref = entry.reference
        if ref is None:
            return {"k": [1], "K": 1, "alpha": ALPHA, "ks": list(range(1, entry.L))}
        return {"k": list(ref.default_ks), "K": ref.K, "alpha": ref.alpha, "ks": ref.ks}

    # ------------------------------------------------------------------ 5 model

    def model_summary(self, name: str) -> str:
        """One line on what the model is and how far it was trained."""
        return card.summary(name, self.entry(name).model)

    def model_card(self, name: str) -> card.Card:
        """Config, parameter count, training summary, and the run's logs when shipped (cached)."""
        entry = self.entry(name)
        if "card" not in entry.cache:
            ref = entry.reference
            words = (f"{ref.images} images of the {ref.split} split, K={ref.K}, prior={ref.prior}. {ref.note}" if ref
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
    class_rows: list[tuple[str, str]] = field(default_factory=list)  # (row image, "class c"), with classes

    @property
    def gallery(self) -> list:
        """What the page shows: a row per class for a model with classes, else the images."""
        return self.class_rows or self.paths


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


def class_words(model: BIVA, x: torch.Tensor) -> list[str]:
    """q(y | x) of each image in words, its two likeliest classes: "7 (0.98), 1 (0.01)"; [] for a
    model without classes."""
    if not model.config.classes:
        return []
    probs = model.classify(x).cpu()
    top = probs.topk(min(2, probs.shape[1]), dim=1)
    return [", ".join(f"{int(c)} ({float(v):.2f})" for v, c in zip(vs, cs)) for vs, cs in zip(top.values, top.indices)]
