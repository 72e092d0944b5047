"""BIVA Studio core: the model, its bounds, data, training and checkpoints."""
from .config import LevelConfig, ModelConfig, PRESETS, preset
from .model import BIVA
from .checkpoint import load_pretrained, save_pretrained

__all__ = ["BIVA", "LevelConfig", "ModelConfig", "PRESETS", "preset", "load_pretrained", "save_pretrained"]
