"""The model: its config and presets, layers, likelihoods, bounds, the BIVA module and what it
does (operations); nothing here imports from the rest of biva_core."""
from biva_core.model.config import PRESETS, LevelConfig, ModelConfig, preset
from biva_core.model.passes import PRIOR_WORDS, PRIORS
from biva_core.model.biva import BIVA

__all__ = ["BIVA", "LevelConfig", "ModelConfig", "PRESETS", "PRIORS", "PRIOR_WORDS", "preset"]
