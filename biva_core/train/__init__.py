"""Training: the config, the loop, the update guard, the semi-supervised objective, several processes and the CLI."""
