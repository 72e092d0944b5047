"""Files: atomic writes, checkpoints (safetensors + JSON), the metrics log and pictures."""
