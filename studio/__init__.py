"""BIVA Studio: a browser front end for pretrained BIVA models (`biva-studio`, `python -m studio`).

`engine.Studio` loads the models once and holds every action as a plain function; `app.build`
wraps it in a Gradio page whose actions are also API endpoints (sample, reconstruct, resample,
mix, anomaly, model_card, latents).
"""
from .engine import Studio

__all__ = ["Studio"]
