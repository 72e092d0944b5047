"""The Gradio page: a thin shell over `engine.Studio`.

Each button calls one engine action; engine ValueErrors become gr.Error messages in the page,
skipped files become warnings. Every action is also an API endpoint with a stable name, taking a
model name, numbers, text and image file paths:

    sample(model, count, temperature, seed)              -> gallery, zip, seed
    reconstruct(model, files)                            -> gallery, table
    resample(model, file, ks, draws, temperature, seed)  -> grid, crop, seed
    mix(model, file_a, file_b, ks)                       -> grid
    anomaly(model, files, k, K, threshold, seed)         -> table, histogram, csv, note
    model_card(model)                                    -> card, config, curves, kl plot, samples
    latents(model, files)                                -> chart, table, note
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import gradio as gr

from . import card, engine
from .engine import EXAMPLES, Studio, default_ks

CSS = """
.pixelated img, img.pixelated { image-rendering: pixelated; }
"""
INTRO = """# BIVA Studio
Very deep hierarchical VAEs ([BIVA](https://arxiv.org/abs/1902.02102)): sample, reconstruct, redraw
the hierarchy level by level, and score images for anomalies
([LLR>k](https://arxiv.org/abs/2102.08248)). Every action is also an API endpoint (see "Use via API")."""


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


def build(studio: Studio, *, concurrency: int = 1) -> gr.Blocks:
    names = studio.names
    loaded = [n for n in names if studio.entries[n].error is None]
    first = loaded[0] if loaded else names[0]
    max_L = max((studio.entries[n].L for n in loaded), default=2)

    # ---------------------------------------------------------------- handlers

    def do_sample(model, count, temperature, seed, progress=gr.Progress()):
        with user_errors():
            r = studio.sample(model, count, temperature, seed, progress=_progress(progress))
        return r.paths, r.archive, r.seed

    def do_reconstruct(model, files, progress=gr.Progress()):
        with user_errors():
            r = studio.reconstruct(model, files, progress=_progress(progress))
        _warn(r.skipped)
        return r.panels, {"headers": list(r.headers), "data": r.rows}

    def do_resample(model, file, ks, draws, temperature, seed, progress=gr.Progress()):
        with user_errors():
            r = studio.hierarchy(model, file, ks, draws, temperature, seed, progress=_progress(progress))
        return r.grid, r.crop, r.seed

    def do_mix(model, file_a, file_b, ks, progress=gr.Progress()):
        with user_errors():
            return studio.mix(model, file_a, file_b, ks, progress=_progress(progress))

    def do_anomaly(model, files, k, importance_samples, threshold, seed, progress=gr.Progress()):
        with user_errors():
            r = studio.anomaly(model, files, k, importance_samples, threshold, seed, progress=_progress(progress))
        _warn(r.skipped)
        return {"headers": r.headers, "data": r.rows}, r.plot, r.csv, r.note

    def do_card(model):
        with user_errors():
            c = studio.model_card(model)
        return c.markdown, c.levels, c.config, c.curves, c.kl_plot, c.samples

    def do_latents(model, files, progress=gr.Progress()):
        with user_errors():
            r = studio.model_latents(model, files, progress=_progress(progress))
        return r.chart, {"headers": list(r.headers), "data": r.rows}, r.note

    def on_model(model):
        """Per-model controls (the choices of k depend on L) and the model card."""
        entry = studio.entries.get(model)
        if entry is None or entry.error is not None:
            message = f"### {model}\n**This model could not be loaded:** {entry.error if entry else 'unknown model'}"
            return (gr.update(), gr.update(), message, "", "", None, None, [])
        L = entry.L
        return (gr.update(choices=list(range(L + 1)), value=default_ks(L)),
                gr.update(choices=list(range(1, L)), value=1), *do_card(model))

    def examples(model, ood=False):
        with user_errors():
            found = studio.examples(model, ood=ood)
        if not found:
            raise gr.Error(f"no example images for {model}: upload your own")
        return found

    def example_pair(model):
        found = examples(model)
        return found[0], found[1 % len(found)]

    # ---------------------------------------------------------------- layout

    with gr.Blocks(title="BIVA Studio", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        broken = [n for n in names if studio.entries[n].error is not None]
        with gr.Row():
            model_dd = gr.Dropdown(names, value=first, label="model", scale=2)
            gr.Markdown(("Not loaded: " + "; ".join(f"**{n}**: {studio.entries[n].error}" for n in broken))
                        if broken else f"{len(loaded)} model(s) loaded.")
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                with gr.Row():
                    count = gr.Slider(1, engine.MAX_SAMPLES, value=16, step=1, label="count")
                    temperature = gr.Textbox("0.8", label="temperature",
                                             info="one value, or one per level (comma list, bottom-up)")
                    seed = gr.Number(0, precision=0, label="seed", minimum=0)
                with gr.Row():
                    sample_btn = gr.Button("Sample", variant="primary")
                    new_seed_btn = gr.Button("New seed")
                gallery = gr.Gallery(label="samples (lossless PNG)", format="png", columns=8, height="auto", fit_columns=False,
                                     object_fit="contain", elem_classes="pixelated", elem_id="sample-gallery")
                archive = gr.File(label="download all (zip)", elem_id="sample-zip")
            with gr.Tab("Reconstruct", id="reconstruct"):
                gr.Markdown("Each row: the upload with the model's crop in red | the model input | "
                            "the reconstruction (every z at its posterior mean). Bits/dim: the ELBO.")
                recon_files = gr.File(file_count="multiple", label="images", elem_id="recon-files")
                with gr.Row():
                    recon_examples = gr.Button("Use the example images")
                    recon_btn = gr.Button("Reconstruct", variant="primary")
                recon_gallery = gr.Gallery(label="upload | input | reconstruction", format="png", columns=3,
                                           height="auto", object_fit="contain", fit_columns=False, elem_id="recon-gallery")
                recon_table = gr.Dataframe(label="bits/dim per image", interactive=False, headers=list(engine.Reconstructions.headers), elem_id="recon-table")
            with gr.Tab("Hierarchy", id="hierarchy"):
                gr.Markdown("Row k keeps z above level k from the image's posterior and redraws the levels "
                            "<= k: k = 0 is the reconstruction, k = L a fresh sample.")
                with gr.Row():
                    file_a = gr.File(label="image (A)", elem_id="file-a")
                    file_b = gr.File(label="image B (for mixing)", elem_id="file-b")
                hier_examples = gr.Button("Use example images")
                ks = gr.CheckboxGroup(list(range(max_L + 1)), value=default_ks(max_L), label="levels k")
                with gr.Row():
                    draws = gr.Slider(1, 8, value=4, step=1, label="draws per row")
                    hier_temp = gr.Textbox("1.0", label="temperature of the redrawn levels")
                    hier_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                with gr.Row():
                    hier_btn = gr.Button("Redraw levels", variant="primary")
                    mix_btn = gr.Button("Mix: top levels from A, the rest from B")
                hier_grid = gr.Image(label="one row per k", format="png", type="filepath", elem_classes="pixelated", elem_id="hier-grid")
                hier_crop = gr.Image(label="preprocessing of A", format="png", type="filepath", height=170, elem_id="hier-crop")
                gr.Markdown("**Mix** over k: z above level k from A, z at and below k from B's posterior "
                            "given A's top (k = 0 reconstructs A, k = L reconstructs B).")
                mix_grid = gr.Image(label="mix", show_label=False, format="png", type="filepath", elem_classes="pixelated", elem_id="mix-grid")
            with gr.Tab("Anomaly", id="anomaly"):
                gr.Markdown("LLR>k = L>0 - L>k (Havtorn et al. 2021): large means out of distribution. "
                            "Percentiles place each image within the model's reference distribution.")
                anom_files = gr.File(file_count="multiple", label="images", elem_id="anom-files")
                anom_examples = gr.Button("Use the examples (faces and out-of-distribution images)")
                with gr.Row():
                    anom_k = gr.Dropdown(list(range(1, max_L)), value=1, label="k")
                    anom_K = gr.Slider(1, 16, value=1, step=1, label="K importance samples")
                    threshold = gr.Slider(50, 100, value=95, step=0.5, label="flag above this reference percentile")
                    anom_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                anom_btn = gr.Button("Score", variant="primary")
                anom_note = gr.Markdown(elem_id="anom-note")
                anom_table = gr.Dataframe(label="scores", interactive=False, headers=engine.anomaly_headers(1), elem_id="anom-table")
                anom_plot = gr.Image(label="reference distribution and uploads", format="png", type="filepath", elem_id="anom-plot",
                                     show_label=False)
                anom_csv = gr.File(label="download (CSV)", elem_id="anom-csv")
            with gr.Tab("Model", id="model"):
                card_md = gr.Markdown(elem_id="model-card")
                with gr.Accordion("levels", open=False):
                    card_levels = gr.Markdown()
                with gr.Accordion("config.json", open=False):
                    card_config = gr.Code(language="json")
                with gr.Row():
                    curves = gr.Image(label="training curves", format="png", type="filepath", elem_id="model-curves",
                                      show_label=False)
                    kl_plot = gr.Image(label="KL per latent during training", format="png", type="filepath",
                                       show_label=False)
                run_samples = gr.Gallery(label="the run's samples (temperature in the file name)", columns=5,
                                         height="auto", format="png", fit_columns=False)
                gr.Markdown("### How the model uses its latents")
                lat_files = gr.File(file_count="multiple", label="images (optional; default: the examples)", elem_id="lat-files")
                lat_btn = gr.Button("Per-level KL and active units", variant="primary")
                lat_chart = gr.Image(label="KL per level", format="png", type="filepath", elem_id="lat-chart",
                                     show_label=False)
                lat_note = gr.Markdown()
                lat_table = gr.Dataframe(label="per latent", interactive=False, headers=list(card.LatentReport.headers), elem_id="lat-table")

        # ------------------------------------------------------------ events
        private = {"api_visibility": "private"}
        sample_btn.click(do_sample, [model_dd, count, temperature, seed], [gallery, archive, seed], api_name="sample")
        new_seed_btn.click(engine.new_seed, None, seed, **private).then(
            do_sample, [model_dd, count, temperature, seed], [gallery, archive, seed], **private)
        recon_examples.click(examples, model_dd, recon_files, **private)
        recon_btn.click(do_reconstruct, [model_dd, recon_files], [recon_gallery, recon_table], api_name="reconstruct")
        hier_examples.click(example_pair, model_dd, [file_a, file_b], **private)
        hier_btn.click(do_resample, [model_dd, file_a, ks, draws, hier_temp, hier_seed], [hier_grid, hier_crop, hier_seed],
                       api_name="resample")
        mix_btn.click(do_mix, [model_dd, file_a, file_b, ks], mix_grid, api_name="mix")
        anom_examples.click(lambda model: examples(model, ood=True), model_dd, anom_files, **private)
        anom_btn.click(do_anomaly, [model_dd, anom_files, anom_k, anom_K, threshold, anom_seed],
                       [anom_table, anom_plot, anom_csv, anom_note], api_name="anomaly")
        lat_btn.click(do_latents, [model_dd, lat_files], [lat_chart, lat_table, lat_note], api_name="latents")
        card_outputs = [card_md, card_levels, card_config, curves, kl_plot, run_samples]
        model_dd.change(on_model, model_dd, [ks, anom_k, *card_outputs], **private)
        demo.load(on_model, model_dd, [ks, anom_k, *card_outputs], **private)
        gr.api(do_card_api(studio), api_name="model_card")
    demo.queue(default_concurrency_limit=concurrency, max_size=100)
    return demo


def do_card_api(studio: Studio) -> Callable[[str], dict]:
    """model_card(model) for API clients: the card as plain JSON (markdown, config, file paths)."""
    def model_card(model: str) -> dict:
        with user_errors():
            c = studio.model_card(model)
        return {"markdown": c.markdown, "levels": c.levels, "config": c.config, "curves": c.curves, "kl_plot": c.kl_plot,
                "samples": c.samples}
    return model_card


def launch(studio: Studio, *, host: str = "127.0.0.1", port: int = 7860, concurrency: int = 1,
           block: bool = True) -> gr.Blocks:
    """Build the page and serve it; `block=False` returns once the server is up (tests)."""
    demo = build(studio, concurrency=concurrency)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True,
                allowed_paths=[str(EXAMPLES), str(studio.workdir)], max_file_size="30mb", ssr_mode=False,
                quiet=True, css=CSS, theme=gr.themes.Soft(), footer_links=["api"])
    return demo

