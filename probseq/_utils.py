"""Small shared helpers: seeding and progress bars."""

from __future__ import annotations

import contextlib
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


def progress_bar(total: int | None, progress: bool | None, desc: str, **kwargs: Any):
    """A tqdm bar; ``progress=None`` shows it only when stderr is a terminal."""
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, **kwargs)


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
