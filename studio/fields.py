"""Input fields that hand the action what the client sent, for the engine's one parser to check.

Gradio's Number, Slider and CheckboxGroup check an API value before the action runs: a text value
such as "abc" is compared with the minimum (Gradio's internal TypeError, "Could not preprocess input
component"), an out-of-range one is told "Value 0 is less than minimum value 1" without the field's
name, and levels k in the comma form "0, 2, 5" are refused. These pass the value through untouched,
so that params.py checks every field and says which field wanted what; the page draws them as
Gradio's own (`is_template`). Subclasses, not patched instances: Gradio rebuilds a component from
its class when an action updates it (the model switch does). Gradio writes a fields.pyi stub beside
this file (git-ignored).
"""
from __future__ import annotations

from typing import Any

import gradio as gr


class Number(gr.Number):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


class Slider(gr.Slider):
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


class LevelsK(gr.CheckboxGroup):
    """Levels k: the checked boxes in the page; a list [0, 2, 5] or the comma form "0, 2, 5" in the API."""
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload

    def api_info(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}]}  # list[int] | str
