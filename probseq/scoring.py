"""Proper scoring rules for predictive distributions: CRPS, Brier score, PIT, coverage.

Shapes: any batch shape ``B`` (``[N, T]`` for one-step predictives, ``[N, H]`` for
forecasts); D for the coordinates of multivariate data; S for samples.

* CRPS (continuous ranked probability score, Gneiting and Raftery 2007),
  ``CRPS(F, y) = integral (F(x) - 1{y <= x})^2 dx``, lower is better, in the data's units.
  Gaussian and Gaussian-mixture predictives use the closed forms of the ``scoringrules``
  library (``crps_normal``, ``crps_mixnorm``); counts (Poisson and Poisson mixtures) sum
  ``(F(k) - 1{y <= k})^2`` over the integers exactly (the ranked probability score);
  samples use ``scoringrules.crps_ensemble``. For multivariate data the CRPS is that of each
  coordinate's marginal, summed over coordinates.
* Brier score for symbols: ``sum_v (p_v - 1{y = v})^2`` (0 is perfect, 2 the worst).
* PIT: ``F(y)``, uniform on (0, 1) for a calibrated forecast; counts use the randomised PIT
  ``F(y - 1) + U (F(y) - F(y - 1))`` (Czado, Gneiting and Held 2009) with a fixed seed.
* Coverage: whether y lies in the central ``level`` interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, Normal

from probseq.data import Sequences
from probseq.forecast import distribution_quantile, mixture_marginals

__all__ = ["crps", "crps_samples", "brier", "pit", "covered", "step_scores",
           "compare_columns"]


def _per_coordinate(y: torch.Tensor, dist: Distribution) -> torch.Tensor:
    """y shaped like the marginals ``[B(, D)]``, float64."""
    return y.to(torch.float64).reshape(tuple(dist.batch_shape) + tuple(dist.event_shape))


def crps(dist: Distribution, y: torch.Tensor) -> torch.Tensor:
    """Closed-form CRPS of each predictive in the batch.

    Args:
        dist: Normal, MultivariateNormal, Independent Normal, Poisson, or a
            MixtureSameFamily of those; batch ``B``.
        y: ``[B]`` (``[B, D]``) observations.

    Returns:
        ``[B]`` float64 (summed over coordinates for multivariate data).
    """
    import scoringrules as sr

    kind, w, loc, scale = mixture_marginals(dist)  # [B(, D), M]
    obs = _per_coordinate(y, dist)
    if kind == "poisson":
        out = _crps_poisson_mixture(w, loc, obs)
    elif w.shape[-1] == 1:
        out = torch.from_numpy(np.asarray(sr.crps_normal(
            obs.numpy(), loc[..., 0].numpy(), scale[..., 0].numpy()), dtype=np.float64))
    else:
        out = torch.from_numpy(np.asarray(sr.crps_mixnorm(
            obs.numpy(), loc.numpy(), scale.numpy(), w.numpy(), m_axis=-1), dtype=np.float64))
    out = out.reshape(obs.shape)
    return out.sum(-1) if dist.event_shape else out


def _crps_poisson_mixture(w: torch.Tensor, rate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_k (F(k) - 1{y <= k})^2`` over k = 0..K, with F(K) within 1e-14 of 1."""
    top = float((rate + 12 * rate.sqrt() + 30).max().ceil())
    top = max(top, float(y.max()) + 1)
    k = torch.arange(0, int(top) + 1, dtype=torch.float64)  # [G]
    cdf = (w.unsqueeze(-1) * torch.special.gammaincc(k + 1, rate.unsqueeze(-1))).sum(-2)
    step = (y.unsqueeze(-1) <= k).to(torch.float64)
    return ((cdf - step) ** 2).sum(-1)


def crps_samples(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CRPS estimated from samples (``scoringrules.crps_ensemble``).

    Args:
        samples: ``[B..., S(, D)]`` with the sample axis just before the coordinates,
            i.e. ``[N, S, H]`` is passed as ``samples.movedim(1, -1)``: the sample axis is
            the LAST axis for univariate data and the second to last for multivariate.
        y: ``[B...(, D)]``.
    """
    import scoringrules as sr

    x = samples.to(torch.float64)
    obs = y.to(torch.float64)
    if obs.ndim == x.ndim - 1:  # univariate: samples [..., S]
        return torch.from_numpy(np.asarray(sr.crps_ensemble(obs.numpy(), x.numpy(), m_axis=-1),
                                           dtype=np.float64))
    per = sr.crps_ensemble(obs.numpy(), x.numpy(), m_axis=-2)
    return torch.from_numpy(np.asarray(per, dtype=np.float64)).sum(-1)


def brier(dist: Categorical, y: torch.Tensor) -> torch.Tensor:
    """Brier score ``sum_v (p_v - 1{y = v})^2`` of each symbol predictive: ``[B]``."""
    p = dist.probs.to(torch.float64)
    onehot = torch.nn.functional.one_hot(y.long(), p.shape[-1]).to(torch.float64)
    return ((p - onehot) ** 2).sum(-1)


def pit(dist: Distribution, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Probability integral transform of each coordinate: ``[B(, D)]`` in [0, 1].

    Counts use the randomised PIT with a generator seeded by ``seed``.
    """
    kind, w, loc, scale = mixture_marginals(dist)
    obs = _per_coordinate(y, dist)
    if kind == "normal":
        z = (obs.unsqueeze(-1) - loc) / scale
        return (w * Normal(0.0, 1.0).cdf(z)).sum(-1)
    upper = (w * torch.special.gammaincc(obs.unsqueeze(-1) + 1, loc)).sum(-1)
    lower = (w * torch.special.gammaincc(obs.unsqueeze(-1), loc)).sum(-1)
    lower = torch.where(obs > 0, lower, torch.zeros_like(lower))
    u = torch.rand(obs.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lower + u * (upper - lower)


def covered(dist: Distribution, y: torch.Tensor, level: float) -> torch.Tensor:
    """Whether each coordinate lies in the central ``level`` interval: bool ``[B(, D)]``."""
    obs = _per_coordinate(y, dist)
    lo = distribution_quantile(dist, 0.5 - 0.5 * level)
    hi = distribution_quantile(dist, 0.5 + 0.5 * level)
    return (obs >= lo) & (obs <= hi)


# ---------------------------------------------------------------------- one-step scores
def step_scores(model: Any, seqs: Sequences, start: int | torch.Tensor = 0,
                exog: Any = None) -> dict[str, torch.Tensor]:
    """One-step-ahead scores of every observed step ``t >= start`` (``[N, T_max]``, 0
    elsewhere, at missing steps too).

    Symbols get ``brier``; other data ``crps``, ``pit`` and ``covered_90`` (in the central
    90% interval). Multivariate PIT and coverage are of the first coordinate.

    Args:
        model: a fitted model.
        seqs: the batch.
        start: steps before it are conditioned on, not scored (``[N]``: per sequence).
        exog: covariates aligned with the batch (used by models fitted with them).

    Raises:
        NotImplementedError: the model has no one-step predictive distributions.
    """
    from probseq.base import exog_for

    exog = exog_for(model, exog)
    kw = {} if exog is None else {"exog": model._coerce_exog(exog, seqs)}
    dist = model._step_predictive(seqs, **kw)
    keep = scored_steps(seqs, start)
    zero = torch.zeros((), dtype=torch.float64)
    if isinstance(dist, Categorical):
        return {"brier": torch.where(keep, brier(dist, seqs.values), zero)}
    values = seqs.values.to(torch.float64)
    out = {"crps": torch.where(keep, crps(dist, values), zero)}
    p = pit(dist, values)
    c = covered(dist, values, 0.9).to(torch.float64)
    if p.ndim == 3:
        p, c = p[..., 0], c[..., 0]
    out["pit"] = torch.where(keep, p, zero)
    out["covered_90"] = torch.where(keep, c, zero)
    return out


def scored_steps(seqs: Sequences, start: int | torch.Tensor) -> torch.Tensor:
    """``[N, T_max]`` bool: the fully observed steps at or after ``start`` (an int, or
    ``[N]`` one start per sequence)."""
    keep = seqs.step_observed.clone() if seqs.has_missing else seqs.mask.clone()
    if isinstance(start, torch.Tensor | np.ndarray):
        first = torch.as_tensor(start, dtype=torch.int64).reshape(-1, 1)
        return keep & (torch.arange(keep.shape[1])[None, :] >= first)
    keep[:, :start] = False
    return keep


def compare_columns(models: Mapping[str, Any], seqs: Sequences, start: int | torch.Tensor,
                    best: str,
                    units: str = "sequences", exog: Any = None) -> dict[str, dict[str, float]]:
    """``crps``/``brier`` columns for :func:`probseq.compare` (held-out tails).

    Each model's mean score per scored step, and ``crps_se``/``brier_se``: the standard error
    of the difference of that mean from the best (by log score) model's, from paired
    per-sequence (or per-step, ``units="steps"``) differences, as for the log score. Models
    without one-step predictive distributions get NaN.

    Returns:
        model name -> {column: value}.
    """
    scores: dict[str, dict[str, torch.Tensor]] = {}
    for name, m in models.items():
        try:
            scores[name] = step_scores(m, seqs, start, exog)
        except NotImplementedError:
            scores[name] = {}
    mask = scored_steps(seqs, start)
    n_steps = int(mask.sum())
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for col in ("crps", "brier"):
        if not any(col in s for s in scores.values()):
            continue
        for name in models:
            s = scores[name].get(col)
            if s is None:
                out[name][col] = out[name][f"{col}_se"] = math.nan
                continue
            out[name][col] = float(s.sum()) / n_steps
            ref = scores[best].get(col)
            if ref is None or name == best:
                out[name][f"{col}_se"] = math.nan if ref is None else 0.0
                continue
            d = (s - ref)[mask] if units == "steps" else (s - ref).sum(-1)
            se = float(d.std(correction=1)) * math.sqrt(d.numel()) / n_steps if (
                d.numel() > 1) else math.nan
            out[name][f"{col}_se"] = se
    return out
