"""Every golden output of tests/golden.py is computed again and equals the pinned one bit for bit
(one thread): a change of layout or a shared helper changes no number. After a change meant to
change numbers, `python tests/golden.py` rewrites them."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import golden

pytestmark = pytest.mark.skipif(torch.get_num_threads() != 1, reason="golden outputs are pinned at one thread")


def assert_tensors_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    bad = {k: float((got[k].float() - want[k].float()).abs().max()) for k in want
           if got[k].shape != want[k].shape or not torch.equal(got[k], want[k])}
    assert not bad, f"{len(bad)} of {len(want)} outputs differ (max abs difference): {dict(list(bad.items())[:5])}"


def pinned(name: str):
    return json.loads((golden.GOLDEN / name).read_text())


def test_every_preset_keeps_its_state_dict_keys_and_shapes():
    assert golden.layouts() == pinned("layouts.json")


@pytest.mark.parametrize("folder", golden.shipped_folders(), ids=lambda p: p.name)
def test_every_shipped_folder_gives_its_pinned_outputs(folder):
    want = load_file(golden.GOLDEN / f"shipped_{folder.name}.safetensors")
    assert_tensors_equal(golden.shipped(folder), want)


def test_twenty_training_steps_give_the_pinned_parameters_and_log():
    tensors, logs = golden.training()
    assert logs == pinned("training.json")
    assert_tensors_equal(tensors, load_file(golden.GOLDEN / "training.safetensors"))


def test_an_export_writes_the_pinned_reference():
    assert golden.export_reference() == pinned("export_reference.json")


@pytest.mark.skipif(not os.environ.get("BIVA_DATA"), reason="set BIVA_DATA to the shared data folder")
def test_the_evaluate_report_is_the_pinned_one():
    assert golden.evaluate_report() == pinned("evaluate.json")


def test_the_studio_anomaly_rows_are_the_pinned_ones():
    assert golden.anomaly_rows() == pinned("anomaly.json")
