"""Argument types shared by the commands: comma-separated lists, positive counts, seeds."""

from __future__ import annotations

import argparse


def ints(text: str) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}"
                                         ) from None


def floats(text: str) -> list[float]:
    """``"1,2.5"`` -> ``[1.0, 2.5]``."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}"
                                         ) from None


def names(text: str) -> list[str]:
    """``"ddim, heun"`` -> ``["ddim", "heun"]``."""
    return [v.strip() for v in text.split(",") if v.strip()]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


SEED_MAX = 2**62  # sample k uses seed + k: a 64-bit integer for any sample count


def seed_int(text: str) -> int:
    """A seed: an integer in ``[0, 2^62]``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2^62], got {value}")
    return value
