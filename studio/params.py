"""The studio's inputs checked and parsed: whole numbers in range, seeds, temperatures, levels k.

Every check raises ValueError with a message for the user that names the field.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

MAX_SEED = 2 ** 32 - 1


def check_int(what: str, value, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; integral floats and numeric strings are accepted."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}") from None
    if not f.is_integer() or not lo <= f <= hi:
        raise ValueError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(f)


def check_float(what: str, value, lo: float, hi: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number from {lo:g} to {hi:g}, got {value!r}") from None
    if not lo <= f <= hi:
        raise ValueError(f"{what} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return f


def check_seed(seed) -> int:
    """A seed in [0, 2^32); an empty seed draws a fresh one (reported back to the user)."""
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        return new_seed()
    return check_int("seed", seed, 0, MAX_SEED)


def new_seed() -> int:
    return random.SystemRandom().randrange(0, 1_000_000)


def derive(seed: int, *parts: int) -> int:
    """An independent 63-bit seed for one chunk / row of a request."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def parse_temperature(value: str | float | int | Sequence[float], L: int, *,
                      allow_zero: bool = False) -> float | list[float]:
    """One temperature, or L comma-separated values (levels bottom-up), each in (0, 10] (or
    [0, 10] with allow_zero: the prior means, for interpolation)."""
    if isinstance(value, (int, float)):
        parts = [value]
    elif isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    else:
        parts = list(value)
    try:
        temps = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"temperature must be a number or {L} comma-separated numbers, got {value!r}") from None
    if len(temps) not in (1, L):
        raise ValueError(f"temperature: give one value or one per level ({L}, bottom-up), got {len(temps)}")
    if not all((0.0 <= t if allow_zero else 0.0 < t) and t <= 10.0 for t in temps):
        raise ValueError(f"temperature values must be in {'[' if allow_zero else '('}0, 10], got {value!r}")
    return temps[0] if len(temps) == 1 else temps


def parse_ks(value: Sequence[int] | str | int, L: int) -> list[int]:
    """Levels k in 0..L, as a list, one number or a comma-separated string ("0, 2, 5"); sorted,
    duplicates dropped."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",")]
    else:
        parts = list(value) if isinstance(value, Sequence) else [value]
    ks = sorted({check_int("k", p, 0, L) for p in parts if str(p).strip()})
    if not ks:
        raise ValueError(f"choose at least one k in 0..{L}")
    return ks


def default_ks(L: int) -> list[int]:
    """All of 0..L for shallow models; 10 spread-out values for deep ones (L=20: 0 1 2 4 7 10 12 15 18 20)."""
    if L <= 10:
        return list(range(L + 1))
    return sorted({0, 1, 2, L} | {round(float(v)) for v in np.linspace(4, L - 2, 6)})
