"""The served studio through gradio_client: every endpoint by its stable api_name, the same seed
gives the same images for every caller, and engine errors reach the caller as messages."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from studio.app import launch
from studio.engine import Studio

from studio_weights import make_weights, write_bad_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
ENDPOINTS = {"/sample", "/reconstruct", "/resample", "/mix", "/interpolate", "/anomaly", "/latents", "/model_card", "/run", "/runs",
             "/load_run"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def server(dirs, tmp_path_factory):
    studio = Studio([dirs[n] for n in ("celeba_tiny", "gray_tiny", "broken")], strict=False,
                    workdir=tmp_path_factory.mktemp("out"))
    demo = launch(studio, port=free_port(), concurrency=2, block=False)
    yield demo
    demo.close()
    studio.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.local_url, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def faces() -> list[str]:
    return sorted(str(p) for p in (ROOT / "studio" / "examples").glob("celeba_test_*.png"))[:3]


def test_binds_to_localhost_and_names_every_endpoint(server, client):
    assert server.server_name == "127.0.0.1"
    api = client.view_api(print_info=False, return_format="dict")
    assert ENDPOINTS <= set(api["named_endpoints"])


def test_sample_is_the_same_for_every_caller(server, client):
    first = client.predict("celeba_tiny", 5, "0.8", 42, api_name="/sample")
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        Client(server.local_url, verbose=False).predict("celeba_tiny", 5, "0.8", 42, api_name="/sample")))
        for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    def pixels(result):
        return [Path(item["image"]).read_bytes() for item in result[0]]
    assert len(first[0]) == 5 and first[2] == 42
    assert all(pixels(r) == pixels(first) for r in results)
    with zipfile.ZipFile(first[1]) as z:
        assert sum(n.endswith(".png") for n in z.namelist()) == 6  # 5 images + the grid
    other = client.predict("celeba_tiny", 5, "0.8", 43, api_name="/sample")
    assert pixels(other) != pixels(first)


def test_reconstruct_resample_mix(client):
    gallery, table = client.predict("celeba_tiny", [handle_file(p) for p in faces()], api_name="/reconstruct")
    assert len(gallery) == 3 and "bits/dim" in gallery[0]["caption"]
    assert table["headers"][3] == "bits/dim" and len(table["data"]) == 3
    grid, crop, seed = client.predict("celeba_tiny", handle_file(faces()[0]), [0, 1, 3], 2, "1.0", 7,
                                      api_name="/resample")
    assert Path(grid).is_file() and Path(crop).is_file() and seed == 7
    mixed = client.predict("celeba_tiny", handle_file(faces()[0]), handle_file(faces()[1]), [0, 2],
                           api_name="/mix")
    assert Path(mixed).is_file()


def test_anomaly_latents_and_card(client):
    note, table, plot, maps, csv_path, verdicts = client.predict("celeba_tiny", [handle_file(p) for p in faces()], [1], 1,
                                                                 0.05, 0, True, api_name="/anomaly")
    assert len(table["data"]) == 3 and table["headers"][1] == "verdict" and table["headers"][7] == "LLR>1 (nats)"
    # the five-second view: one row per image, its picture inside the page, a verdict in words
    assert verdicts.count("class='anom-row'") == 3 and verdicts.count("<img") == 3
    assert all(f"alt='{Path(p).name}'" in verdicts for p in faces())
    assert all(("typical face" in verdicts) or ("ANOMALY" in verdicts) for _ in faces())
    note2, table2, *_ = client.predict("celeba_tiny", [handle_file(p) for p in faces()], [1, 2], 1, 0.05, 0, False,
                                       api_name="/anomaly")        # several k: a column per k
    assert table2["headers"][5:7] == ["p LLR>1 (side)", "p LLR>2 (side)"] and "LLR>1, LLR>2" in note2
    assert all(row[1] in ("ANOMALY", "typical") for row in table["data"])
    assert Path(plot).is_file() and Path(csv_path).read_text().startswith("image,") and len(maps) == 3
    assert "flagged" in note
    with pytest.raises(AppError, match="made with K=1"):
        client.predict("celeba_tiny", [handle_file(faces()[0])], [1], 4, 0.05, 0, False, api_name="/anomaly")
    chart, per_latent, note = client.predict("celeba_tiny", None, api_name="/latents")
    assert Path(chart).is_file() and len(per_latent["data"]) == 5
    card = client.predict("celeba_tiny", api_name="/model_card")
    assert "parameters" in card["markdown"] and '"image_shape"' in card["config"]


@pytest.mark.parametrize("kind, message", [("truncated", "truncated.png: corrupt or truncated image"),
                                           ("text", "notes.txt: not an image file"),
                                           ("bomb", "bomb.png: image too large"),
                                           ("empty", "empty.png: the file is empty")])
def test_bad_uploads_come_back_as_messages(client, files, kind, message):
    with pytest.raises(AppError, match=message):
        client.predict("celeba_tiny", [handle_file(files[kind])], api_name="/reconstruct")


def test_bad_arguments_and_broken_models_come_back_as_messages(client):
    with pytest.raises(AppError, match="temperature"):
        client.predict("celeba_tiny", 2, "warm", 0, api_name="/sample")
    with pytest.raises(AppError, match="could not be loaded"):
        client.predict("broken", 2, "1.0", 0, api_name="/sample")
    with pytest.raises(AppError, match="no image given"):
        client.predict("celeba_tiny", [], api_name="/reconstruct")
    # the server still answers after the errors
    assert len(client.predict("gray_tiny", 1, "1.0", 0, api_name="/sample")[0]) == 1


@pytest.mark.parametrize("api_name, args, message", [
    ("/sample", (2, "0.8", "abc"), "seed must be a whole number from 0 to 4294967295, got 'abc'"),
    ("/sample", (2, "0.8", "1e400"), "seed must be a whole number from 0 to 4294967295, got '1e400'"),
    ("/sample", (2, "0.8", -1), "seed must be a whole number from 0 to 4294967295, got -1"),
    ("/sample", ("3.5", "0.8", 0), "count must be a whole number from 1 to 64, got '3.5'"),
    ("/sample", ("", "0.8", 0), "count must be a whole number from 1 to 64, got ''"),
    ("/anomaly", ("abc", 0.05, 0, False), "K (importance samples) must be a whole number from 1 to 64, got 'abc'"),
    ("/anomaly", (100, 0.05, 0, False), "K (importance samples) must be a whole number from 1 to 64, got 100"),
    ("/anomaly", (1, "often", 0, False), "alpha must be a number from 1e-06 to 0.5, got 'often'"),
])
def test_a_bad_number_is_told_by_the_field_it_was_given_to(client, api_name, args, message):
    """Gradio's own check of a number field raises an internal TypeError for text ("Could not
    preprocess input component") and names no field; the fields pass values to the engine's parser."""
    before = ("celeba_tiny",) if api_name == "/sample" else ("celeba_tiny", [handle_file(faces()[0])], 1)  # files, k
    with pytest.raises(AppError, match=f"^{re.escape(message)}$"):
        client.predict(*before, *args, api_name=api_name)


def test_levels_k_in_the_comma_form_are_the_list(client):
    face = handle_file(faces()[0])
    def grid(ks):
        return Path(client.predict("celeba_tiny", face, ks, 2, "1.0", 7, api_name="/resample")[0]).read_bytes()
    assert grid("0, 1, 3") == grid([0, 1, 3]) == grid("3,1,0,1") != grid([0, 3])
    mixed = [Path(client.predict("celeba_tiny", face, handle_file(faces()[1]), ks, api_name="/mix")).read_bytes()
             for ks in ("0, 2", [0, 2])]
    assert mixed[0] == mixed[1]
    for ks, message in [("1, 9", "k must be a whole number from 0 to 3, got '9'"),
                        ("1, x", "k must be a whole number from 0 to 3, got 'x'"),
                        ("1, 2.5", "k must be a whole number from 0 to 3, got '2.5'"),
                        (" , ", "choose at least one k in 0..3")]:
        with pytest.raises(AppError, match=f"^{re.escape(message)}$"):
            client.predict("celeba_tiny", face, ks, 2, "1.0", 7, api_name="/resample")


def test_cli_serves_the_page(dirs):
    """The CLI serves the page; what a user uploads, and what the studio made, is removed when it stops."""
    port = free_port()
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("biva-studio-*"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "studio", "--weights", str(dirs["gray_tiny"]),
                             "--port", str(port), "--threads", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        while "BIVA Studio: serving" not in seen:  # printed once the server is up
            line = proc.stdout.readline()
            assert line, f"the studio exited: {seen}"
            seen += line
        assert f"serving gray_tiny on cpu at http://127.0.0.1:{port}" in seen
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "BIVA Studio" in page
        # an upload and an output land in the studio's own folder, Gradio's temp folder inside it
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("gray_tiny", [handle_file(faces()[0])], api_name="/reconstruct")
        uploaded = [p for p in tmp.glob(f"biva-studio-*/gradio/**/{Path(faces()[0]).name}") if p.is_file()]
        mine = {tmp / p.relative_to(tmp).parts[0] for p in uploaded} - before   # this studio's folder
        assert len(mine) == 1 and any((folder / "gradio").rglob("*.png") for folder in mine)
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, rest
    assert not any(folder.exists() for folder in mine)   # uploads and outputs are gone with the studio


def test_every_output_has_a_name_and_one_default_temperature(client, server):
    """API outputs are named after their labels (no value_57); the tabs share one temperature."""
    from studio.engine import TEMPERATURE
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [r["label"] for e in api.values() for r in e["returns"]]
    assert names and not [n for n in names if n.startswith("value_")], names
    temps = [c["props"]["value"] for c in server.config["components"]
             if str(c.get("props", {}).get("label", "")).startswith("temperature")]
    assert len(temps) == 2 and set(temps) == {str(TEMPERATURE)}
    with pytest.raises(AppError, match="seed must be a whole number"):
        client.predict("celeba_tiny", 2, "0.8", 2.5, api_name="/sample")


SHIPPED = sorted(p for p in (ROOT / "weights").iterdir() if (p / "reference.json").is_file())


def example_for(folder: Path) -> Path:
    own = sorted((folder / "examples").glob("*.png")) if (folder / "examples").is_dir() else []
    return own[0] if own else sorted((ROOT / "studio" / "examples").glob("celeba_test_*.png"))[0]


@pytest.fixture(scope="module")
def shipped_client(tmp_path_factory):
    studio = Studio(SHIPPED, workdir=tmp_path_factory.mktemp("shipped_out"))
    demo = launch(studio, port=free_port(), concurrency=1, block=False)
    yield Client(demo.local_url, verbose=False)
    demo.close()
    studio.close()


def test_the_anomaly_endpoint_answers_with_its_defaults_for_every_shipped_model(shipped_client):
    """Only the model and the images given: k, K and alpha are the model's reference's."""
    from biva_core.detect import Reference
    for folder in SHIPPED:
        ref = Reference.read(folder)
        note, table, *_ = shipped_client.predict(folder.name, [handle_file(example_for(folder))], api_name="/anomaly")
        assert len(table["data"]) == 1 and table["data"][0][1] in ("ANOMALY", "typical"), folder.name
        assert [h for h in table["headers"] if h.startswith("LLR>")] == [f"LLR>{k} (nats)" for k in ref.default_ks]


@pytest.mark.parametrize("field, args", [("alpha", (None, "nan")), ("alpha", (None, "inf")),
                                         ("K (importance samples)", ("nan", 0.05))])
def test_nan_and_inf_are_refused_by_name(client, field, args):
    """nan and inf as text (a JSON float cannot be nan: clients refuse to send one)."""
    with pytest.raises(AppError, match=f"^{re.escape(field)} must be a .*number"):
        client.predict("celeba_tiny", [handle_file(faces()[0])], [1], *args, 0, False, api_name="/anomaly")


def test_a_run_loaded_in_the_runs_tab_is_usable_through_the_api(dirs, tmp_path):
    """load_run serves a run's best weights under a new name; /sample then takes that name (it was
    refused as "not in the list of choices"), and an unknown name is told as such."""
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(dirs["celeba_tiny"], runs / "mine")
    (runs / "mine" / "metrics.jsonl").write_text('{"step": 1, "bpd": 7.0, "seconds": 1.0}\n')
    studio = Studio([dirs["celeba_tiny"]], workdir=tmp_path / "out", runs=runs)
    demo = launch(studio, port=free_port(), block=False)
    try:
        c = Client(demo.local_url, verbose=False)
        c.predict(str(runs / "mine"), api_name="/load_run")
        name = next(n for n in studio.names if n != "celeba_tiny")
        fresh = Client(demo.local_url, verbose=False)   # another caller: the model list as served
        paths = fresh.predict(name, 2, "0.8", 0, api_name="/sample")[0]
        assert len(paths) == 2
        with pytest.raises(AppError, match="no_such_model"):
            c.predict("no_such_model", 2, "0.8", 0, api_name="/sample")
    finally:
        demo.close()
        studio.close()
