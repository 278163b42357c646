"""Small shared helpers: seeding and progress bars."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded, restoring the caller's RNG state after.

    Pyro draws from torch's global RNG, so this also makes Pyro programs reproducible.
    ``seed=None`` leaves the RNG alone.
    """
    if seed is None:
        yield
        return
    devices = (
        [torch.cuda.current_device()]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def show_progress() -> bool:
    """Whether long fits show a progress bar by default (``progress=None``): on a terminal
    and in a notebook's kernel (the bar goes to stderr as text, which Jupyter shows);
    the environment variable ``PROBSEQ_PROGRESS`` (``0`` or ``1``) overrides both (the
    documentation build sets 0)."""
    forced = os.environ.get("PROBSEQ_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(total: int | None, progress: bool | None, desc: str, **kwargs: Any):
    """A tqdm bar to stderr; ``progress=None`` shows it where :func:`show_progress` says."""
    from tqdm.std import tqdm

    if progress is None:
        progress = show_progress()
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, file=sys.stderr,
                **kwargs)


def param_array(x: Any, name: str) -> np.ndarray:
    """A user-given parameter as a finite float64 array (a copy), or ``ValueError``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr
