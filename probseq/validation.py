"""Checks of user-given parameters shared by every model's ``from_params``.

Parameters often come from another library's fit (statsmodels, hmmlearn), whose rounding can
leave a probability at ``-1e-17`` or a row summing to ``1 - 1e-15``. Such vectors are valid to
rounding: :func:`probability_vectors` accepts them and projects them once (negative rounding
set to zero, each vector divided by its sum), so that every model built from them is exactly
normalised; real violations are refused with a ``ValueError`` naming the entry or the row.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEGATIVE_TOLERANCE", "SUM_TOLERANCE", "probability_vectors"]

#: a negative entry down to ``-NEGATIVE_TOLERANCE`` times its vector's largest absolute entry
#: is rounding, set to zero; a more negative one is refused.
NEGATIVE_TOLERANCE = 1e-12

#: a vector whose sum is within this of 1 is rescaled to sum to 1; another is refused.
SUM_TOLERANCE = 1e-6


def probability_vectors(x: np.ndarray, name: str) -> np.ndarray:
    """Probability vectors along the last axis, valid to rounding, projected onto the simplex.

    Args:
        x: ``[..., V]`` finite float64 array (e.g. ``[V]`` initial probabilities, ``[K, K]``
            transition rows, ``[K, V]`` emission rows). Not modified.
        name: the parameter's name, used in error messages.

    Returns:
        A new ``[..., V]`` array: the entries clipped at 0, each vector divided by its sum.

    Raises:
        ValueError: an entry below ``-NEGATIVE_TOLERANCE`` times its vector's largest
            absolute entry ("transition has negative entries: transition[0, 1] = -0.1 ..."),
            or a vector whose sum differs from 1 by more than :data:`SUM_TOLERANCE`
            ("row 1 of transition sums to 1.1: transition rows must sum to 1 within 1e-6").
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must hold probability vectors [..., V] with V >= 1, "
                         f"got shape {x.shape}")
    scale = np.abs(x).max(axis=-1, keepdims=True)
    negative = x < -NEGATIVE_TOLERANCE * scale
    if negative.any():
        index = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"{name} has negative entries: {name}{list(index)} = {x[index]:.6g} "
                         "(probabilities are >= 0)")
    clipped = np.maximum(x, 0.0)
    sums = x.sum(axis=-1)
    bad = np.abs(sums - 1.0) > SUM_TOLERANCE
    if bad.any():
        row = tuple(int(i) for i in np.argwhere(bad)[0]) if x.ndim > 1 else ()
        what = name if x.ndim == 1 else f"row {row[0] if len(row) == 1 else list(row)} of {name}"
        rows = "" if x.ndim == 1 else " rows"
        raise ValueError(f"{what} sums to {sums[row]:.8g}: {name}{rows} must sum to 1 within "
                         f"{SUM_TOLERANCE:g}".replace("e-0", "e-"))
    return clipped / clipped.sum(axis=-1, keepdims=True)
