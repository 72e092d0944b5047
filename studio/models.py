"""The models a studio serves: each folder loaded once, with what the studio needs to know about
it (is it a face model, how uploads are binarized, what one of its images shows, its detector's
reference), or the reason it could not be loaded."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from biva_core import BIVA, load_pretrained
from biva_core.data import NOUNS
from biva_core.data.prepare import binarization, is_face
from biva_core.detect import Reference

EXAMPLES = Path(__file__).resolve().parent / "examples"


@dataclass
class Entry:
    """One served model, or the reason it could not be loaded."""
    name: str
    directory: Path
    model: BIVA | None = None
    error: str | None = None
    face: bool = False
    binarize: str = "threshold"      # how uploads are binarized for a Bernoulli model
    noun: str = "image"              # what one of its images shows ("face"): verdicts in words
    reference: Reference | None = None
    reference_error: str | None = None
    cache: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        return self.model.config.L


def open_entry(directory: str | Path, name: str, device: str, *, strict: bool = True) -> Entry:
    """Load one pretrained folder. strict: a folder that does not load raises ValueError;
    otherwise the entry keeps the reason (a reference that does not read is kept as its reason
    either way: the model still serves, without verdicts)."""
    entry = Entry(name, Path(directory))
    try:
        entry.model = load_pretrained(directory, device)
    except (ValueError, OSError, RuntimeError) as err:  # CheckpointError is a ValueError
        if strict:
            raise ValueError(f"cannot load weights {directory}: {err}") from None
        entry.error = str(err)
        return entry
    info = entry.model.training_info or {}
    entry.face = is_face(name, info) and entry.model.config.image_shape[0] == 3
    entry.binarize = binarization(info)
    entry.noun = NOUNS.get(str(info.get("dataset")), "face" if entry.face else "image")
    try:
        entry.reference = Reference.read(directory)
    except ValueError as err:
        entry.reference_error = str(err)
    return entry


def examples(entry: Entry, *, ood: bool = False) -> list[str]:
    """Example files for a model: its folder's examples/, else the shipped faces for face models;
    with ood, the out-of-distribution examples (files named ood_*) as well."""
    own = entry.directory / "examples"
    if own.is_dir():
        files = sorted(p for p in own.iterdir() if p.is_file() and not p.name.startswith("."))
        return [str(p) for p in files if ood or not p.name.startswith("ood_")]
    if not entry.face:
        return []
    pattern = ["celeba_test_*.png"] + (["ood_mnist_*.png", "ood_fashion_*.png", "ood_upside_down_*.png",
                                        "ood_noise.png", "ood_flat.png"] if ood else ["celeba_aligned_*.jpg"])
    return [str(p) for pat in pattern for p in sorted(EXAMPLES.glob(pat))]


def absolute(path: str | Path) -> Path:
    """The absolute path with "." and ".." taken out but symbolic links kept."""
    return Path(os.path.normpath(os.path.abspath(path)))


def discover(root: Path) -> list[Path]:
    """Every subfolder of `root` holding a config.json; face models first, celeba64 first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "config.json").is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (not is_face(p.name), p.name != "celeba64", p.name))
