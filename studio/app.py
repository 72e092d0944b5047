"""The Gradio page: a thin shell over `engine.Studio`.

Each button calls one engine action; engine ValueErrors become gr.Error messages in the page,
skipped files become warnings. Every action is also an API endpoint with a stable name, taking a
model name, numbers, text and image file paths; the fields (fields.py) pass what an API client sent
to the engine, whose parser names the field a bad value was given to. ks: a list [0, 2, 5] or the
comma form "0, 2, 5".

    sample(model, count, temperature, seed, class)                   -> gallery, zip, seed
    reconstruct(model, files)                                        -> gallery, table
    resample(model, file, ks, draws, temperature, seed)              -> grid, crop, seed
    mix(model, file_a, file_b, ks)                                   -> grid
    interpolate(model, file_a, file_b, k, steps, temperature, seed)   -> grid
    anomaly(model, files, k, importance_samples, alpha, seed, maps)  -> note, table, histograms, maps, csv,
                                                                        verdicts (HTML)
    latents(model, files)                                            -> chart, table, note
    model_card(model)                                                -> {markdown, levels, config, ...}
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from . import anomaly as report
from .card import LatentReport
from .engine import MAX_DRAWS, MAX_K_SAMPLES, MAX_SAMPLES, TEMPERATURE, Reconstructions, Studio
from .models import EXAMPLES
from .fields import LevelsK, Number, Slider
from .params import default_ks, new_seed

CSS = """.pixelated img, img.pixelated { image-rendering: pixelated; }
.anom-summary td { vertical-align: middle; padding: 4px 10px; } .anom-summary td:nth-child(3) { font-size: 1.1em; }
.anom-name { font-size: 0.8em; color: #555; }"""
INTRO = """# BIVA Studio
Very deep hierarchical VAEs ([BIVA](https://arxiv.org/abs/1902.02102)): sample, reconstruct, redraw
the hierarchy level by level, and score images for anomalies
([LLR>k](https://arxiv.org/abs/2102.08248)). Every action is also an API endpoint (see "Use via API")."""
PRIVATE = {"api_visibility": "private"}  # UI helpers, not API endpoints


@contextlib.contextmanager
def user_errors():
    """Engine ValueErrors -> a gr.Error shown in the page (and returned to API clients)."""
    try:
        yield
    except ValueError as err:
        raise gr.Error(str(err), print_exception=False) from None


def _progress(progress: gr.Progress) -> Callable[[float, str], None]:
    return lambda fraction, desc: progress(fraction, desc=desc)


def _warn(messages: list[str]) -> None:
    for m in messages:
        gr.Warning(f"Skipped {m}")


def _table(headers, rows) -> dict:
    return {"headers": list(headers), "data": rows}


def _image(elem_id: str | None = None, **kw) -> gr.Image:
    return gr.Image(format="png", type="filepath", elem_id=elem_id, **kw)


# ---------------------------------------------------------------------- tabs


def sample_tab(studio: Studio, model: gr.Dropdown, clear: list) -> tuple[gr.Dropdown, gr.Gallery, gr.Markdown]:
    """Returns the class picker, which the model switch fills (hidden for a model without classes),
    the gallery, which it shows one class row a line for such a model (readable at the page's width),
    and the line on how far the model was trained."""
    def sample(model, count, temperature, seed, label="all", progress=gr.Progress()):
        with user_errors():
            r = studio.sample(model, count, temperature, seed, progress=_progress(progress), label=label)
        return r.gallery, r.archive, r.seed

    with gr.Row():
        count = Slider(1, MAX_SAMPLES, value=16, step=1, label="count", info="of every class, for a model with classes")
        temperature = gr.Textbox(str(TEMPERATURE), label="temperature",
                                 info="one value, or one per level (comma list, bottom-up)")
        seed = Number(0, label="seed", minimum=0, info="a whole number")
        label = gr.Dropdown(["all"], value="all", label="class", info="a model with classes: one class or all",
                            visible=False, allow_custom_value=True, elem_id="sample-class")
    with gr.Row():
        go = gr.Button("Sample", variant="primary")
        fresh = gr.Button("New seed")
    about = gr.Markdown(elem_id="sample-about")
    gallery = gr.Gallery(label="samples (lossless PNG)", format="png", columns=8, height="auto", fit_columns=False,
                         object_fit="contain", elem_classes="pixelated", elem_id="sample-gallery")
    archive = gr.File(label="download all (zip)", elem_id="sample-zip")
    inputs, outputs = [model, count, temperature, seed, label], [gallery, archive, seed]
    clear += [gallery, archive]
    go.click(sample, inputs, outputs, api_name="sample", show_progress_on=[gallery])
    fresh.click(new_seed, None, seed, **PRIVATE).then(sample, inputs, outputs, **PRIVATE)
    return label, gallery, about


def reconstruct_tab(studio: Studio, model: gr.Dropdown, examples: Callable, clear: list) -> None:
    def reconstruct(model, files, progress=gr.Progress()):
        with user_errors():
            r = studio.reconstruct(model, files, progress=_progress(progress))
        _warn(r.skipped)
        return r.panels, _table(r.headers, r.rows)

    gr.Markdown("Each row: the upload with the model's crop in red | the model input | "
                "the reconstruction (every z at its posterior mean). Bits/dim: the ELBO.")
    files = gr.File(file_count="multiple", label="images", elem_id="recon-files")
    with gr.Row():
        use_examples = gr.Button("Use the example images")
        go = gr.Button("Reconstruct", variant="primary")
    gallery = gr.Gallery(label="upload | input | reconstruction", format="png", columns=3, height="auto",
                         object_fit="contain", fit_columns=False, elem_id="recon-gallery")
    table = gr.Dataframe(label="bits/dim per image", interactive=False, headers=list(Reconstructions.headers),
                         elem_id="recon-table")
    use_examples.click(examples, model, files, **PRIVATE)
    go.click(reconstruct, [model, files], [gallery, table], api_name="reconstruct", show_progress_on=[gallery])
    clear += [files, gallery, table]   # the inputs too: a face model must not run on the digits left


def hierarchy_tab(studio: Studio, model: gr.Dropdown, examples: Callable, max_L: int, clear: list):
    """Resample, mix and interpolate; returns the controls that depend on the model's L."""
    def resample(model, file, ks, draws, temperature, seed, progress=gr.Progress()):
        with user_errors():
            r = studio.hierarchy(model, file, ks, draws, temperature, seed, progress=_progress(progress))
        return r.grid, r.crop, r.seed

    def mix(model, file_a, file_b, ks, progress=gr.Progress()):
        with user_errors():
            return studio.mix(model, file_a, file_b, ks, progress=_progress(progress))

    def interpolate(model, file_a, file_b, k, steps, temperature, seed, progress=gr.Progress()):
        with user_errors():
            return studio.interpolate(model, file_a, file_b, k, steps, temperature, seed, progress=_progress(progress))

    def per_level(model, *values):
        """The sliders of the model's levels as the comma list the temperature box takes."""
        entry = studio.entries.get(model)
        L = entry.L if entry is not None and entry.error is None else len(values)
        return ", ".join(f"{v:g}" for v in values[:L])

    def example_pair(model):
        found = examples(model)
        return found[0], found[1 % len(found)]

    gr.Markdown("Row k keeps z above level k from the image's posterior and redraws the levels "
                "<= k: k = 0 is the reconstruction, k = L a fresh sample.")
    with gr.Row():
        file_a = gr.File(label="image (A)", elem_id="file-a")
        file_b = gr.File(label="image B (for mixing)", elem_id="file-b")
    use_examples = gr.Button("Use example images")
    ks = LevelsK(list(range(max_L + 1)), value=default_ks(max_L), label="levels k")
    with gr.Row():
        draws = Slider(1, MAX_DRAWS, value=4, step=1, label="draws per row")
        temperature = gr.Textbox(str(TEMPERATURE), label="temperature of the redrawn levels",
                                 info="one value, or one per level (comma list, bottom-up)", elem_id="hier-temperature")
        seed = Number(0, label="seed", minimum=0, info="a whole number")
    with gr.Accordion("one temperature per level (fills the box above)", open=False):
        with gr.Row():
            level_temps = [gr.Slider(0.05, 2.0, value=TEMPERATURE, step=0.05, label=f"level {i}", min_width=90,
                                     elem_id=f"hier-t{i}") for i in range(1, max_L + 1)]
    with gr.Row():
        go = gr.Button("Redraw levels", variant="primary")
        go_mix = gr.Button("Mix: top levels from A, the rest from B")
    grid = _image("hier-grid", label="one row per k", elem_classes="pixelated")
    crop = _image("hier-crop", label="preprocessing of A", height=170)
    gr.Markdown("**Mix** over k: z above level k from A, z at and below k from B's posterior "
                "given A's top (k = 0 reconstructs A, k = L reconstructs B).")
    mixed = _image("mix-grid", label="mix", show_label=False, elem_classes="pixelated")
    gr.Markdown("**Interpolate** from A to B at k: z above level k runs along the sphere between A's and B's "
                "posterior means; the levels <= k come from the prior at the temperature (0: its means).")
    with gr.Row():
        interp_k = Slider(0, max_L - 1, value=0, step=1, label="k (interpolate z above k)", elem_id="interp-k")
        steps = Slider(2, MAX_DRAWS, value=8, step=1, label="steps")
        interp_t = gr.Textbox("0", label="levels <= k: prior temperature (0 = the prior means)")
        go_interp = gr.Button("Interpolate A to B")
    interpolated = _image("interp-grid", label="interpolation", show_label=False, elem_classes="pixelated")
    use_examples.click(example_pair, model, [file_a, file_b], **PRIVATE)
    for slider in level_temps:
        slider.change(per_level, [model, *level_temps], temperature, **PRIVATE)
    go_interp.click(interpolate, [model, file_a, file_b, interp_k, steps, interp_t, seed], interpolated,
                    api_name="interpolate")
    go.click(resample, [model, file_a, ks, draws, temperature, seed], [grid, crop, seed], api_name="resample",
             show_progress_on=[grid])
    go_mix.click(mix, [model, file_a, file_b, ks], mixed, api_name="mix")
    clear += [file_a, file_b, grid, crop, mixed, interpolated]
    return ks, interp_k, level_temps


def anomaly_tab(studio: Studio, model: gr.Dropdown, examples: Callable, max_L: int, clear: list) -> list[gr.Component]:
    """The detector: a verdict per image first, every statistic one click away; returns (k, K,
    alpha) for the model switch to set to the reference's."""
    def anomaly(model, files, k, importance_samples, alpha, seed, maps, progress=gr.Progress()):
        with user_errors():
            r = studio.anomaly(model, files, k, importance_samples, alpha, seed, maps, progress=_progress(progress))
        _warn(r.skipped)
        return r.note, _table(r.headers, r.rows), r.plot, r.maps, r.csv, r.html

    gr.Markdown("Is an image like the ones this model was trained on? Each image gets a verdict in words, its "
                "p-value (flagged when p < alpha: about alpha of ordinary images are flagged) and the statistic "
                "that decided. Beside it, where its bits go: bits per pixel with every latent inferred, and with the "
                "lowest levels drawn from the prior (bright where the upper levels cannot explain the image).")
    files = gr.File(file_count="multiple", label="images", elem_id="anom-files")
    use_examples = gr.Button("Use the examples (in- and out-of-distribution images)")
    with gr.Accordion("test settings (empty k and K = 0: the model's reference's)", open=False):
        with gr.Row():
            k = gr.Dropdown(list(range(1, max_L)), value=[], multiselect=True, label="k (LLR>k; several: one "
                            "statistic each; empty: the reference's)", elem_id="anom-k")
            K = Number(0, minimum=0, maximum=MAX_K_SAMPLES, label="K importance samples (0: the reference's)",
                       elem_id="anom-K")
            alpha = Slider(0.001, 0.2, value=0.05, step=0.001, label="alpha (flag when p < alpha)",
                           elem_id="anom-alpha")
            seed = Number(0, label="seed", minimum=0, info="a whole number")
            maps = gr.Checkbox(True, label="pixel maps")
    go = gr.Button("Score", variant="primary")
    summary = gr.HTML(label="verdicts", elem_id="anom-summary")
    with gr.Accordion("details: every statistic, the reference's histograms, the pixel maps, CSV", open=False):
        gr.Markdown("A two-sided test of typicality (spec section 6): the bits/dim of L>0 and LLR>k = L>0 - L>k "
                    "(Havtorn et al. 2021) of each image are compared with the model's reference images on **both** "
                    "sides: a digit is atypically *simple* for a face model, noise atypically complex. A model's "
                    "reference may add statistics (bits/dim minus a lossless codec's bits/dim: the image's "
                    "complexity taken out) and test them jointly (a kernel density of the reference's statistics, the "
                    "face model's default; docs/detector.md): then an image can be flagged while each statistic alone "
                    "is typical, when no reference image shows that combination. Otherwise the p-values are combined "
                    "by Bonferroni. K must be the reference's.")
        note = gr.Markdown(label="verdict", elem_id="anom-note")
        table = gr.Dataframe(label="every statistic", interactive=False, headers=report.headers([1]),
                             elem_id="anom-table")
        plot = _image("anom-plot", label="reference distributions and the images", show_label=False)
        gallery = gr.Gallery(label="where in the image: bits per pixel with z from the posterior, and with z<=k "
                             "from the prior", columns=1, height="auto", object_fit="contain", elem_id="anom-maps",
                             elem_classes="pixelated")
        csv = gr.File(label="download (CSV)", elem_id="anom-csv")
    use_examples.click(lambda model: examples(model, ood=True), model, files, **PRIVATE)
    # one progress bar (per image, with the time left), on the verdicts
    go.click(anomaly, [model, files, k, K, alpha, seed, maps], [note, table, plot, gallery, csv, summary],
             api_name="anomaly", show_progress_on=[summary])
    clear += [files, note, table, plot, gallery, csv, summary]
    return [k, K, alpha]


def runs_tab(studio: Studio, model: gr.Dropdown, demo: gr.Blocks) -> None:
    """A training run, live: plots refreshed every few seconds (gr.Timer) from the run folder,
    which is only read; one click serves its best weights in the other tabs."""
    def labelled(found: list[str]) -> list[tuple[str, str]]:
        """(name under the runs folder, folder): the page names a run, not the server's path."""
        root = studio.runs_folder.root
        return [(Path(f).relative_to(root).as_posix() if root and Path(f).is_relative_to(root) and Path(f) != root
                 else Path(f).name, f) for f in found]

    def choices():
        return gr.update(choices=labelled(studio.runs()))

    def on_page(current):
        """Every page load lists the runs as they are now (a run started after the studio shows)."""
        found = studio.runs()
        return gr.update(choices=labelled(found), value=current if current in found else (found[0] if found else None))

    def view(folder):
        if not folder:
            msg = ("No run chosen." if studio.runs_folder.root else
                   "No runs folder: start the studio with `--runs DIR` (default `runs/` when it exists).")
            return msg, None, None, None, None
        with user_errors():
            v = studio.run_view(folder)
        return v.status, v.pictures.get("curves"), v.pictures.get("figure2"), v.speed, v.samples

    def load(folder):
        with user_errors():
            name = studio.load_run(folder)
        gr.Info(f"serving {name}: choose it in the model list")
        return gr.update(choices=studio.names, value=name)

    gr.Markdown("Training runs under the runs folder (what `python train.py --out DIR` writes). The plots "
                "refresh every few seconds while a run trains; the studio only reads the folder.")
    runs = studio.runs()
    with gr.Row():
        run = gr.Dropdown(labelled(runs), value=runs[0] if runs else None, label="run", elem_id="run-choice", scale=3)
        again = gr.Button("Refresh the list")
        load_btn = gr.Button("Load its best weights into the other tabs", variant="primary")
    status = gr.Markdown(label="run status", elem_id="run-status")
    with gr.Row():   # drawn pictures: Gradio's own plots draw no legend entries (6.31)
        curves = _image("run-bpd", label="bits/dim against steps", height=360)
        figure2 = _image("run-kl", label="KL per latent against training time (the paper's Figure 2)", height=360)
    speed = gr.LinePlot(x="step", y="images/s", label="training images per second", elem_id="run-speed", height=240)
    samples = _image("run-samples", label="latest samples", elem_classes="pixelated", height=300)
    outputs = [status, curves, figure2, speed, samples]
    timer = gr.Timer(5)
    timer.tick(view, run, outputs, **PRIVATE, show_progress="hidden")
    run.change(view, run, outputs, api_name="run")
    again.click(choices, None, run, api_name="runs")
    load_btn.click(load, run, model, api_name="load_run")
    demo.load(on_page, run, run, **PRIVATE)


def model_tab(studio: Studio, model: gr.Dropdown, clear: list) -> list[gr.Component]:
    """The card's components (filled when the model changes) after wiring the latents action."""
    def latents(model, files, progress=gr.Progress()):
        with user_errors():
            r = studio.model_latents(model, files, progress=_progress(progress))
        return r.chart, _table(r.headers, r.rows), r.note

    card = gr.Markdown(label="model card", elem_id="model-card")
    with gr.Accordion("levels", open=False):
        levels = gr.Markdown(label="levels")
    with gr.Accordion("config.json", open=False):
        config = gr.Code(language="json", label="config.json")
    with gr.Row():
        curves = _image("model-curves", label="training curves", show_label=False)
        kl_plot = _image("model-figure2", label="KL per latent against training time (the paper's Figure 2)")
    samples = gr.Gallery(label="the run's samples (temperature in the file name)", columns=5, height="auto",
                         format="png", fit_columns=False)
    gr.Markdown("### How the model uses its latents")
    files = gr.File(file_count="multiple", label="images (optional; default: the examples)", elem_id="lat-files")
    go = gr.Button("Per-level KL and active units", variant="primary")
    chart = _image("lat-chart", label="KL per level", show_label=False)
    note = gr.Markdown(label="note")
    table = gr.Dataframe(label="per latent", interactive=False, headers=list(LatentReport.headers),
                         elem_id="lat-table")
    go.click(latents, [model, files], [chart, table, note], api_name="latents", show_progress_on=[chart])
    clear += [files, chart, table, note]
    return [card, levels, config, curves, kl_plot, samples]


# ---------------------------------------------------------------------- the page


def build(studio: Studio, *, concurrency: int = 1) -> gr.Blocks:
    names = studio.names
    loaded = [n for n in names if studio.entries[n].error is None]
    broken = [n for n in names if n not in loaded]
    max_L = max((studio.entries[n].L for n in loaded), default=2)

    def examples(model, ood=False):
        with user_errors():
            found = studio.examples(model, ood=ood)
        if not found:
            raise gr.Error(f"no example images for {model}: upload your own")
        return found

    def card(model):
        with user_errors():
            c = studio.model_card(model)
        return c.markdown, c.levels, c.config, c.curves, c.kl_plot, c.samples

    clear: list[gr.Component] = []   # every tab's inputs and outputs: emptied when the model changes

    def on_model(model):
        """Per-model controls (the choices of k depend on L), the model card, and the previous
        model's outputs cleared."""
        entry = studio.entries.get(model)
        empty = [gr.update(value=None) for _ in clear]
        if entry is None or entry.error is not None:
            why = entry.error if entry else "unknown model"
            return (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), *[gr.update() for _ in level_temps],
                    gr.update(), gr.update(), f"**{model} could not be loaded:** {why}",
                    f"**{model} could not be loaded:** {why}", "", "", None, None, [], *empty)
        L, C = entry.L, entry.model.config.classes
        d = studio.detector_defaults(model)
        return (gr.update(choices=list(range(L + 1)), value=default_ks(L)),
                gr.update(choices=d["ks"], value=d["k"]), gr.update(value=d["K"]), gr.update(value=d["alpha"]),
                gr.update(maximum=L - 1, value=0), *[gr.update(visible=i < L) for i in range(len(level_temps))],
                gr.update(choices=["all", *range(C)], value="all", visible=C > 0), gr.update(columns=1 if C else 8),
                studio.model_summary(model),
                *card(model), *empty)

    def model_card(model: str) -> dict:
        """The model card as JSON: markdown, levels, config and server-side file paths."""
        with user_errors():
            c = studio.model_card(model)
        return {"markdown": c.markdown, "levels": c.levels, "config": c.config, "curves": c.curves,
                "kl_plot": c.kl_plot, "samples": c.samples}

    # Gradio's cache (uploads and served outputs): every 10 minutes drop files older than an hour,
    # and everything when the server stops
    with gr.Blocks(title="BIVA Studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            # custom values: a run loaded later (Runs tab) is a model the API may name; the engine tells
            # an unknown name
            model = gr.Dropdown(names, value=loaded[0] if loaded else names[0], label="model", scale=2,
                                allow_custom_value=True, elem_id="model")
            gr.Markdown("Not loaded: " + "; ".join(f"**{n}**: {studio.entries[n].error}" for n in broken)
                        if broken else f"{len(loaded)} model(s) loaded.")
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                class_pick, sample_gallery, sample_about = sample_tab(studio, model, clear)
            with gr.Tab("Reconstruct", id="reconstruct"):
                reconstruct_tab(studio, model, examples, clear)
            with gr.Tab("Hierarchy", id="hierarchy"):
                ks, interp_k, level_temps = hierarchy_tab(studio, model, examples, max_L, clear)
            with gr.Tab("Anomaly", id="anomaly"):
                detector_controls = anomaly_tab(studio, model, examples, max_L, clear)
            with gr.Tab("Model", id="model"):
                card_outputs = model_tab(studio, model, clear)
            with gr.Tab("Runs", id="runs"):
                runs_tab(studio, model, demo)
        per_model = [ks, *detector_controls, interp_k, *level_temps, class_pick, sample_gallery, sample_about, *card_outputs, *clear]
        model.change(on_model, model, per_model, **PRIVATE)
        demo.load(on_model, model, per_model, **PRIVATE)
        gr.api(model_card, api_name="model_card")
    demo.queue(default_concurrency_limit=concurrency, max_size=100)
    return demo


def launch(studio: Studio, *, host: str = "127.0.0.1", port: int = 7860, concurrency: int = 1,
           block: bool = True) -> gr.Blocks:
    """Build the page and serve it; `block=False` returns once the server is up (tests)."""
    demo = build(studio, concurrency=concurrency)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True,
                allowed_paths=[str(EXAMPLES), str(studio.workdir)], max_file_size="30mb", ssr_mode=False,
                quiet=True, css=CSS, theme=gr.themes.Soft(), footer_links=["api"])
    return demo
