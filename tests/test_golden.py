"""Every golden output of tests/golden.py is computed again and equals the pinned one bit for bit
(one thread) on a machine of the kind that pinned them: a change of layout or a shared helper
changes no number. On another kind of machine (another CPU or instruction set, another torch or
Pillow) the outputs agree within the rounding that it gives: float32 numbers within RTOL of their
tensor's scale, quantized images and maps off by a level at no more than FLIPS of their elements;
a refactor's mistake moves whole tensors. After a change meant to change numbers, `python
tests/golden.py` rewrites them."""
from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch
from safetensors.torch import load_file

import golden

pytestmark = pytest.mark.skipif(torch.get_num_threads() != 1, reason="golden outputs are pinned at one thread")


RTOL = 1e-3    # another instruction set: a float32 output within this fraction of its tensor's scale
FLIPS = 0.01   # ... but for at most this fraction of its elements (a decoded pixel one level off)


def pinned(name: str):
    return json.loads((golden.GOLDEN / name).read_text())


SAME_MACHINE = golden.machine() == pinned("machine.json")


def far(got: torch.Tensor, want: torch.Tensor) -> float:
    """0 when got is want within the rounding of this machine; else the fraction of elements off."""
    if got.shape != want.shape:
        return 1.0
    if SAME_MACHINE:
        return 0.0 if torch.equal(got, want) else float((got != want).double().mean())
    got, want = got.double(), want.double()
    off = (got - want).abs() > RTOL * max(float(want.abs().max()), 1e-12)
    fraction = float(off.double().mean())
    return 0.0 if fraction <= FLIPS else fraction


def assert_tensors_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    bad = {k: far(got[k], want[k]) for k in want}
    bad = {k: f"{v:.3f} of the elements" for k, v in bad.items() if v}
    how = "bit for bit" if SAME_MACHINE else f"within {RTOL:g} of their scale (this machine is not the pinning kind)"
    assert not bad, f"{len(bad)} of {len(want)} outputs differ {how}: {dict(list(bad.items())[:5])}"


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def near(a: float, b: float, text: str = "") -> bool:
    """Two numbers of a report the same within this machine's rounding; a number printed in a
    string (0.218) within one unit of its last digit as well."""
    if SAME_MACHINE:
        return a == b
    unit = 10.0 ** -len(text.split(".")[1]) if "." in text and "e" not in text else 0.0
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9) or abs(a - b) <= 1.01 * unit


def assert_json_equal(got, want, where: str = "") -> None:
    """A report equal to the pinned one: exactly on the pinning kind of machine, numbers (also
    those inside strings) within its rounding elsewhere; keys, words and lengths exactly."""
    if SAME_MACHINE:
        assert got == want, where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys"
        for k in want:
            assert_json_equal(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_json_equal(g, w, f"{where}[{i}]")
    elif isinstance(want, str):
        assert isinstance(got, str) and NUMBER.sub("#", got) == NUMBER.sub("#", want), f"{where}: {got!r} != {want!r}"
        for g, w in zip(NUMBER.findall(got), NUMBER.findall(want)):
            assert near(float(g), float(w), w), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool) and near(got, want), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_every_preset_keeps_its_state_dict_keys_and_shapes():
    assert golden.layouts() == pinned("layouts.json")  # keys and shapes: the same on every machine


@pytest.mark.parametrize("folder", golden.shipped_folders(), ids=lambda p: p.name)
def test_every_shipped_folder_gives_its_pinned_outputs(folder):
    want = load_file(golden.GOLDEN / f"shipped_{folder.name}.safetensors")
    assert_tensors_equal(golden.shipped(folder), want)


def test_twenty_training_steps_give_the_pinned_parameters_and_log():
    tensors, logs = golden.training()
    assert_json_equal(logs, pinned("training.json"))
    assert_tensors_equal(tensors, load_file(golden.GOLDEN / "training.safetensors"))


def test_an_export_writes_the_pinned_reference():
    assert_json_equal(golden.export_reference(), pinned("export_reference.json"))


@pytest.mark.skipif(not os.environ.get("BIVA_DATA"), reason="set BIVA_DATA to the shared data folder")
def test_the_evaluate_report_is_the_pinned_one():
    assert_json_equal(golden.evaluate_report(), pinned("evaluate.json"))


def test_the_studio_anomaly_rows_are_the_pinned_ones():
    assert_json_equal(golden.anomaly_rows(), pinned("anomaly.json"))


def test_on_another_machine_rounding_passes_and_a_changed_output_does_not(monkeypatch):
    """The comparison another kind of machine gets: float32 noise and a few pixels one level off
    pass; a tensor off by 1% of its scale, a tenth of an image's pixels a level off, a report's
    number off in its third digit, or another word, do not."""
    monkeypatch.setattr(__import__(__name__), "SAME_MACHINE", False)
    g = torch.Generator().manual_seed(0)
    want = torch.randn(4, 3, 8, 8, generator=g)
    image = (torch.rand(4, 3, 8, 8, generator=g) * 255).round() / 255
    noisy = want * (1 + 1e-6 * torch.randn(want.shape, generator=g))
    a_few = image.clone().flatten()
    a_few[:5] += 1 / 255                             # 5 of 768 pixels one level up (0.65%)
    a_tenth = image.clone().flatten()
    a_tenth[:77] += 1 / 255
    assert far(noisy, want) == 0 and far(a_few.view_as(image), image) == 0
    assert far(want + 0.01 * want.abs().max(), want) == 1.0 and far(want * 1.01, want) > FLIPS
    assert far(a_tenth.view_as(image), image) > FLIPS
    assert far(want[:2], want) == 1.0
    assert_json_equal({"bpd": 5.3930004, "v": "0.219 (typical)"}, {"bpd": 5.393, "v": "0.218 (typical)"})
    for got in ({"bpd": 5.40, "v": "0.218 (typical)"}, {"bpd": 5.393, "v": "0.228 (typical)"},
                {"bpd": 5.393, "v": "0.218 (ANOMALY)"}, {"bpd": 5.393}):
        with pytest.raises(AssertionError):
            assert_json_equal(got, {"bpd": 5.393, "v": "0.218 (typical)"})
