"""BIVA Studio core: the model, its bounds, data, training and checkpoints."""
from biva_core.model.config import LevelConfig, ModelConfig, PRESETS, preset
from biva_core.model import BIVA
from biva_core.io.checkpoint import load_pretrained, save_pretrained

__all__ = ["BIVA", "LevelConfig", "ModelConfig", "PRESETS", "preset", "load_pretrained", "save_pretrained"]
