"""The studio in a real browser (Playwright driving Debian's chromium): every tab's action puts
images on the page, and a corrupt upload shows its error message while the page keeps working.

Skipped only when /usr/bin/chromium is missing. With BIVA_STUDIO_SCREENSHOTS=DIR it serves the
shipped weights/celeba64 instead of a tiny model and saves one full-page screenshot per tab in DIR
(how docs/screenshots/ is made):

    BIVA_STUDIO_SCREENSHOTS=docs/screenshots pytest tests/test_studio_browser.py
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
SHOTS = os.environ.get("BIVA_STUDIO_SCREENSHOTS")
TIMEOUT_MS = 300_000 if SHOTS else 60_000

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium"),
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from studio.app import launch
    from studio.engine import Studio
    from studio_weights import make_weights

    if SHOTS:
        folders = [ROOT / "weights" / "celeba64"]
    else:
        dirs = make_weights(tmp_path_factory.mktemp("weights"))
        folders = [dirs["celeba_tiny"], dirs["gray_tiny"]]
    runs = ROOT / "runs" if SHOTS and (ROOT / "runs").is_dir() else None  # a real run for the screenshot
    studio = Studio(folders, workdir=tmp_path_factory.mktemp("out"), runs=runs)
    demo = launch(studio, port=free_port(), block=False)
    yield demo.local_url
    demo.close()
    studio.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("BIVA Studio", exact=True).first.wait_for()
    page.get_by_role("button", name="Sample", exact=True).wait_for()
    yield page
    page.close()


def images_shown(page, selector: str, count: int = 1) -> int:
    """Wait until `count` images under `selector` have loaded with a real size; return how many.
    The element is scrolled into view first: images below the fold load lazily."""
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_function(
        """([sel, n]) => { const imgs = [...document.querySelectorAll(sel + ' img')];
                           imgs.forEach(i => { if (!i.complete) i.loading = 'eager'; });  // lazy ones: load now
                           return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[selector, count])
    return page.locator(f"{selector} img").count()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def listed(page, selector: str, name: str) -> None:
    """Wait until the file component `selector` lists a file called `name`."""
    page.locator(f'{selector} td.filename[aria-label="{name}"]').wait_for()


def upload(page, selector: str, files: list, name: str) -> None:
    """Give the file component `selector` the files and wait until it lists `name`. A tab's
    components can be drawn again just after the tab opens, taking a file given to the element
    before with it (seen once in a full suite on a busy machine): then the files go again, once."""
    for attempt in (1, 2):
        page.locator(f"{selector} input[type=file]").set_input_files([str(f) for f in files])
        try:
            page.locator(f'{selector} td.filename[aria-label="{name}"]').wait_for(timeout=TIMEOUT_MS // 2)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def shows_text(page, selector: str, text: str) -> None:
    """Wait until the element `selector` holds `text` (table cells may be laid out hidden)."""
    page.wait_for_function("([sel, t]) => (document.querySelector(sel)?.textContent || '').includes(t)",
                           arg=[selector, text])


def click(page, label: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()


def screenshot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(500)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_every_tab_puts_images_on_the_page(page):
    shows_text(page, "#sample-about", "trained")              # how far the model was trained
    click(page, "Sample")
    assert images_shown(page, "#sample-gallery", 16) == 16
    page.locator("#sample-zip a").first.wait_for()
    screenshot(page, "1_sample")

    open_tab(page, "Reconstruct")
    click(page, "Use the example images")
    listed(page, "#recon-files", "celeba_aligned_202368.jpg")
    click(page, "Reconstruct")
    assert images_shown(page, "#recon-gallery", 7) == 7
    shows_text(page, "#recon-table", "celeba_aligned_202368.jpg")
    screenshot(page, "2_reconstruct")

    open_tab(page, "Hierarchy")
    click(page, "Use example images")
    listed(page, "#file-b", "celeba_test_185290.png")
    click(page, "Redraw levels")
    images_shown(page, "#hier-grid")
    images_shown(page, "#hier-crop")
    click(page, "Mix: top levels from A, the rest from B")
    images_shown(page, "#mix-grid")
    click(page, "Interpolate A to B")
    images_shown(page, "#interp-grid")
    page.get_by_text("one temperature per level (fills the box above)").click()
    page.locator("#hier-t2 input[type=number]").fill("1.5")
    page.locator("#hier-t2 input[type=number]").press("Enter")
    page.wait_for_function("() => document.querySelector('#hier-temperature textarea, #hier-temperature input')"
                           ".value.startsWith('0.8, 1.5')")
    screenshot(page, "3_hierarchy")

    open_tab(page, "Anomaly")
    click(page, "Use the examples (in- and out-of-distribution images)")
    listed(page, "#anom-files", "ood_mnist_7.png")
    click(page, "Score")
    images_shown(page, "#anom-summary")       # a row per image: the image, its map, the verdict in words
    shows_text(page, "#anom-summary", "ood_mnist_7.png")
    shows_text(page, "#anom-summary", "atypically simple for this model" if SHOTS else "verdict")
    examples = [p for p in (ROOT / "studio" / "examples").glob("*.png")]   # the face examples, in and out
    assert page.locator("#anom-summary tr.anom-row").count() == len(examples) == 11
    # each picture (image | maps | colour scale) is shown whole: the box keeps the picture's aspect
    boxes = page.eval_on_selector_all("#anom-summary img", "imgs => imgs.map(i => [i.getBoundingClientRect().width, "
                                      "i.getBoundingClientRect().height, i.naturalWidth, i.naturalHeight])")
    assert all(abs(bw / bh - nw / nh) < 0.02 and bw >= 0.5 * nw for bw, bh, nw, nh in boxes), boxes
    screenshot(page, "4_anomaly")
    page.get_by_text("details: every statistic").click()
    images_shown(page, "#anom-plot")
    images_shown(page, "#anom-maps")
    shows_text(page, "#anom-table", "ood_mnist_7.png")
    shows_text(page, "#anom-table", "ANOMALY" if SHOTS else "verdict")  # the face model flags the digits
    page.locator("#anom-csv a").first.wait_for()
    assert "flagged" in page.locator("#anom-note").inner_text()
    screenshot(page, "4_anomaly_details")

    open_tab(page, "Model")
    shows_text(page, "#model-card", "parameters")
    images_shown(page, "#model-curves")
    images_shown(page, "#model-figure2")
    click(page, "Per-level KL and active units")
    images_shown(page, "#lat-chart")
    shows_text(page, "#lat-table", "z1_bu")
    screenshot(page, "5_model")

    if SHOTS and (ROOT / "runs").is_dir():
        open_tab(page, "Runs")
        shows_text(page, "#run-status", "step")
        images_shown(page, "#run-kl")
        page.wait_for_timeout(3000)
        screenshot(page, "6_runs")


def test_corrupt_upload_shows_the_error_and_the_page_keeps_working(page, tmp_path):
    good = (ROOT / "studio" / "examples" / "celeba_test_182676.png").read_bytes()
    broken = tmp_path / "half_a_face.png"
    broken.write_bytes(good[: len(good) // 2])
    open_tab(page, "Reconstruct")
    upload(page, "#recon-files", [broken], "half_a_face.png")
    click(page, "Reconstruct")
    page.get_by_text("half_a_face.png: corrupt or truncated image").first.wait_for()
    # the same page still works: a good upload next to the bad one is reconstructed, the bad one skipped
    face = ROOT / "studio" / "examples" / "celeba_test_182676.png"
    upload(page, "#recon-files", [broken, face], "celeba_test_182676.png")
    click(page, "Reconstruct")
    assert images_shown(page, "#recon-gallery", 1) == 1
    page.get_by_text("Skipped half_a_face.png").first.wait_for()


@pytest.mark.skipif(bool(SHOTS), reason="the screenshot run serves one model")
def test_switching_models_clears_the_outputs(page):
    """Samples of one model do not stay on the page once another model is chosen, and neither do the
    uploads meant for it (a grey model would otherwise score the faces left from before)."""
    face = ROOT / "studio" / "examples" / "celeba_test_182676.png"
    open_tab(page, "Reconstruct")
    upload(page, "#recon-files", [face], "celeba_test_182676.png")
    page.locator("#model input").click()
    page.get_by_role("option", name="gray_tiny").click()
    page.wait_for_function("() => !document.querySelector('#recon-files').textContent.includes('celeba_test_182676')")
    page.locator("#model input").click()
    page.get_by_role("option", name="celeba_tiny").click()
    open_tab(page, "Sample")
    click(page, "Sample")
    images_shown(page, "#sample-gallery", 4)
    page.locator("#model input").click()
    page.get_by_role("option", name="gray_tiny").click()
    page.wait_for_function("() => document.querySelectorAll('#sample-gallery img').length === 0")
    click(page, "Sample")  # and the new model samples into the same gallery
    images_shown(page, "#sample-gallery", 4)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """A tiny train.py run writing into runs/live while the test watches (stopped afterwards)."""
    import subprocess
    import sys
    from test_train import env, image_folder
    root = tmp_path_factory.mktemp("runs_test")
    image_folder(root / "images", n_train=12, n_valid=3)
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", "tiny", "--data", "folder", "--data-dir",
           str(root / "images"), "--out", str(root / "runs" / "live"), "--batch-size", "4", "--no-progress",
           "--steps", "1000000", "--max-minutes", "3", "--set", "image_shape=[3,8,8]", "num_threads=1",
           "eval_images=0", "log_every=5", "eval_every=10"]
    proc = subprocess.Popen(cmd, env=env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield root / "runs"
    proc.terminate()
    proc.wait(60)


@pytest.mark.skipif(bool(SHOTS), reason="the screenshot run serves one model")
def test_runs_tab_follows_a_training_run(browser, training_run, tmp_path):
    """The Runs tab lists a run being trained, its status and plots grow between refreshes, and its
    best weights load into the model list."""
    import time
    from studio.app import launch
    from studio.engine import Studio
    from studio_weights import make_weights
    deadline = time.time() + 120
    while not (training_run / "live" / "config.json").is_file() and time.time() < deadline:
        time.sleep(0.5)  # the first validation writes the weights
    dirs = make_weights(tmp_path / "weights")
    studio = Studio([dirs["celeba_tiny"]], workdir=tmp_path / "out", runs=training_run)
    demo = launch(studio, port=free_port(), block=False)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(demo.local_url)
        open_tab(page, "Runs")
        shows_text(page, "#run-status", "live")
        step = lambda: int(page.locator("#run-status").inner_text().split("step ")[1].split(" ")[0].replace(",", ""))  # noqa: E731
        first = step()
        images_shown(page, "#run-bpd")      # the curves with their legend, and Figure 2
        images_shown(page, "#run-kl")
        page.wait_for_function(f"() => {{ const t = document.querySelector('#run-status').textContent; "
                               f"const m = t.match(/step ([0-9,]+)/); return m && +m[1].replace(/,/g, '') > {first}; }}")
        assert step() > first  # the timer refreshed the view while training went on
        images_shown(page, "#run-samples")
        click(page, "Load its best weights into the other tabs")
        page.wait_for_function("() => document.querySelector('#model input').value === 'run live'")
        assert "run live" in studio.names
    finally:
        page.close()
        demo.close()
        studio.close()


@pytest.mark.skipif(bool(SHOTS), reason="the screenshot run serves one model")
def test_a_run_started_after_the_studio_is_listed_on_the_next_page_load(browser, tmp_path):
    import json
    from studio.app import launch
    from studio.engine import Studio
    from studio_weights import make_weights
    dirs = make_weights(tmp_path / "weights")
    root = tmp_path / "runs"
    root.mkdir()
    studio = Studio([dirs["celeba_tiny"]], workdir=tmp_path / "out", runs=root)
    demo = launch(studio, port=free_port(), block=False)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        (root / "late").mkdir()      # started after the studio: no Refresh clicked
        rows = [{"step": s, "bpd": 6.0 - s / 100, "seconds": 5.0 * s, "images_per_s": 9.0} for s in (5, 10)]
        (root / "late" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        page.goto(demo.local_url)
        open_tab(page, "Runs")
        shows_text(page, "#run-status", "late")
        shows_text(page, "#run-status", "step 10")
        assert page.locator("#run-choice input").input_value() == "late"   # its name, not the server's path
        assert str(tmp_path) not in page.locator("#run-status").inner_text()
    finally:
        page.close()
        demo.close()
        studio.close()


def test_a_model_with_classes_has_a_class_picker_and_readable_class_rows(browser, tmp_path):
    """The class picker shows for a model with classes only; all classes come as one row per class,
    each row drawn at least 60 px high on the page; one picked class comes as its one row."""
    from biva_core import save_pretrained
    from conftest import live_model, tiny_config
    from studio.app import launch
    from studio.engine import Studio
    from studio_weights import make_weights
    dirs = make_weights(tmp_path / "weights")
    digits = save_pretrained(live_model(tiny_config(kind="bernoulli").replace(classes=3), seed=7), tmp_path / "digits")
    studio = Studio([dirs["gray_tiny"], digits], workdir=tmp_path / "out")
    demo = launch(studio, port=free_port(), block=False)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(demo.local_url)
        page.get_by_role("button", name="Sample", exact=True).wait_for()
        assert not page.locator("#sample-class").is_visible()        # gray_tiny has no classes
        page.locator("#model input").click()
        page.get_by_role("option", name="digits").click()
        page.locator("#sample-class").wait_for(state="visible")
        click(page, "Sample")
        assert images_shown(page, "#sample-gallery", 3) == 3            # a row per class
        heights = page.eval_on_selector_all("#sample-gallery img", "imgs => imgs.map(i => i.getBoundingClientRect().height)")
        assert min(heights) >= 60, heights
        page.locator("#sample-class input").click()
        page.get_by_role("option", name="2", exact=True).click()
        click(page, "Sample")
        page.wait_for_function("() => document.querySelectorAll('#sample-gallery img').length === 1")
        page.locator("#model input").click()
        page.get_by_role("option", name="gray_tiny").click()
        page.locator("#sample-class").wait_for(state="hidden")
        click(page, "Sample")
        assert images_shown(page, "#sample-gallery", 16) == 16         # images again, 8 a line
    finally:
        page.close()
        demo.close()
        studio.close()
