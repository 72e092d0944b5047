"""Evaluation (bounds, OOD AUROCs, reports, the biva-evaluate CLI) and the export of a run into a shipped folder."""
