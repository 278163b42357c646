"""Forecasts: the predictive distribution of the next H steps after each sequence.

:meth:`probseq.SequenceModel.forecast` returns a :class:`Forecast`. Shapes use the letters of
:mod:`probseq.base` (N sequences, D observation dimensions, V symbols) plus H, the horizon,
and S, the number of sampled paths.

A forecast is *exact* when the model has closed-form h-step marginals (autoregressive and
state-space models: Gaussian moments; Markov chains and HMMs: the h-step marginal
distributions, mixtures for Gaussian and Poisson HMMs). Otherwise its first step is still
the model's exact one-step predictive distribution and the later steps are estimated from
sampled continuations of each sequence; :attr:`Forecast.method` says which.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    Poisson,
)

__all__ = ["Forecast", "EXACT", "FIRST_STEP_EXACT", "APPROXIMATE_FIRST_STEP",
           "DEFAULT_NUM_SAMPLES"]

#: :attr:`Forecast.method` of a forecast whose every step is exact.
EXACT = "exact"
#: :attr:`Forecast.method` when step 1 is exact and later steps are estimated from samples.
FIRST_STEP_EXACT = "first step exact, then sampled"
#: :attr:`Forecast.method` when step 1 is a model's approximate one-step predictive (deep
#: Markov: a particle approximation) and later steps are estimated from samples.
APPROXIMATE_FIRST_STEP = "first step approximate, then sampled"
#: sampled paths per sequence when a forecast needs samples and ``num_samples`` is None.
DEFAULT_NUM_SAMPLES = 1000

_BISECTION_STEPS = 80


@dataclass(eq=False, kw_only=True)
class Forecast:
    """Predictive distribution of the next H observations after each sequence.

    One sequence in drops the N axis of every tensor, as in the rest of the API.

    Attributes:
        mean: ``[N, H]`` (``[N, H, D]`` for multivariate data): predictive means; for symbols
            the most probable symbol of each step (int64).
        std: like ``mean``: marginal standard deviations (``None`` for symbols).
        lower, upper: like ``mean``: the central ``level`` prediction interval of each
            coordinate (``None`` for symbols).
        level: the intervals' coverage.
        cov: ``[N, H, D, D]`` predictive covariance of each future observation (D = 1 for
            univariate data), where it is exact; ``None`` otherwise.
        probs: ``[N, H, V]`` symbol probabilities (symbols only; empirical frequencies at
            sampled steps).
        samples: ``[N, S, H]`` (``[N, S, H, D]``) sampled future paths, when drawn.
        index: a pandas index of the H future time points, continuing the index of a
            pandas input (``DatetimeIndex``, ``PeriodIndex``, ``RangeIndex``); ``None``
            otherwise.
        method: ``"exact"``, ``"first step exact, then sampled"`` or (deep Markov model)
            ``"first step approximate, then sampled"``.
        num_exact_steps: how many leading steps come from exact distributions (H or 1).
            Exact steps without a stored distribution are Gaussian with ``mean`` and
            ``std``.
    """

    mean: torch.Tensor
    std: torch.Tensor | None
    lower: torch.Tensor | None
    upper: torch.Tensor | None
    level: float
    cov: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    index: pd.Index | None = None
    method: str = EXACT
    num_exact_steps: int = 0
    _dist: Distribution | None = field(default=None, repr=False)
    _single: bool = field(default=False, repr=False)

    @property
    def distribution(self) -> Distribution | None:
        """The exact marginal predictive distributions, batch shape ``[N, num_exact_steps]``
        (the N axis is kept even for one sequence)."""
        return self._dist

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0 if self._single else 1])

    def quantile(self, q: float | Any) -> torch.Tensor:
        """Marginal predictive quantiles of each step and coordinate.

        Exact steps invert the predictive CDF (numerically, by bisection, for mixtures;
        the smallest count with ``F >= q`` for counts); sampled steps use the empirical
        quantile of the samples.

        Args:
            q: a level in (0, 1) or a sequence of Q levels.

        Returns:
            Shaped like ``mean``; with a sequence of levels a leading axis Q is added.

        Raises:
            ValueError: for symbol forecasts (use ``probs``) or q outside (0, 1).
        """
        if self.probs is not None:
            raise ValueError("quantiles of symbols are not defined; use Forecast.probs")
        qs = torch.as_tensor(np.asarray(q, dtype=np.float64))
        if qs.ndim > 1 or not bool(((qs > 0) & (qs < 1)).all()):
            raise ValueError(f"q must be a level or a 1-D sequence of levels in (0, 1), got {q!r}")
        out = torch.stack([self._quantile_one(float(v)) for v in qs.reshape(-1)])
        out = out[0] if qs.ndim == 0 else out
        return out

    def _quantile_one(self, q: float) -> torch.Tensor:
        parts = []
        if self._dist is not None and self.num_exact_steps > 0:
            parts.append(distribution_quantile(self._dist, q))
        elif self.num_exact_steps > 0:  # built from Gaussian moments only
            mean = self.mean if not self._single else self.mean.unsqueeze(0)
            std = self.std if not self._single else self.std.unsqueeze(0)
            z = Normal(torch.zeros((), dtype=torch.float64), 1.0).icdf(
                torch.tensor(q, dtype=torch.float64))
            parts.append((mean + z * std)[:, : self.num_exact_steps])
        if self.num_exact_steps < self.horizon:
            samples = self.samples if not self._single else self.samples.unsqueeze(0)
            parts.append(sample_quantile(samples[:, :, self.num_exact_steps:], q,
                                         counts=not samples.is_floating_point()))
        out = torch.cat(parts, dim=1)
        return out[0] if self._single else out

    def to_frame(self) -> pd.DataFrame:
        """A tidy table: one row per sequence, step h (1..H) and coordinate.

        Columns: ``sequence`` (several sequences only), ``h``, ``dim`` (multivariate only),
        then ``mean``, ``std``, ``lower``, ``upper`` (symbols: ``mode`` and ``p_0..p_(V-1)``).
        With one sequence and a pandas index, the table is indexed by the future time points.
        """
        def batch(x: torch.Tensor | None) -> np.ndarray | None:
            if x is None:
                return None
            x = x.unsqueeze(0) if self._single else x
            return x.detach().cpu().numpy()

        mean = batch(self.mean)
        n, h = mean.shape[:2]
        seq_ix, h_ix = np.meshgrid(np.arange(n), np.arange(1, h + 1), indexing="ij")
        if self.probs is not None:
            probs = batch(self.probs)
            cols: dict[str, Any] = {"sequence": seq_ix.ravel(), "h": h_ix.ravel(),
                                    "mode": mean.ravel()}
            for v in range(probs.shape[-1]):
                cols[f"p_{v}"] = probs[..., v].ravel()
            time_reps = 1
        else:
            d = 1 if mean.ndim == 2 else mean.shape[2]
            cols = {"sequence": np.repeat(seq_ix.ravel(), d), "h": np.repeat(h_ix.ravel(), d)}
            if mean.ndim == 3:
                cols["dim"] = np.tile(np.arange(d), n * h)
            for name in ("mean", "std", "lower", "upper"):
                cols[name] = batch(getattr(self, name)).reshape(-1)
            time_reps = d
        df = pd.DataFrame(cols)
        if self._single:
            df = df.drop(columns="sequence")
        if self.index is not None and self._single:
            df.index = self.index.repeat(time_reps)
        return df


# ---------------------------------------------------------------------- building forecasts
def build_forecast(
    dist: Distribution | None,
    num_exact_steps: int,
    samples: torch.Tensor | None,
    horizon: int,
    level: float,
    *,
    discrete: bool,
    single: bool,
    index: pd.Index | None = None,
    first_step_exact: bool = True,
) -> Forecast:
    """A :class:`Forecast` from exact marginals of the first steps plus samples of the rest.

    Args:
        dist: exact marginals with batch shape ``[N, num_exact_steps]`` (or None when 0).
        num_exact_steps: how many leading steps ``dist`` covers.
        samples: ``[N, S, H(, D)]`` sampled paths (required when num_exact_steps < H).
        horizon: H.
        level: interval coverage.
        discrete: symbols (Categorical marginals and int samples).
        single: drop the N axis.
        index: the future time index.
        first_step_exact: False when ``dist`` is an approximation.
    """
    h_exact = num_exact_steps
    if h_exact < horizon and samples is None:
        raise ValueError("samples are needed for the steps without exact distributions")
    lo_q, hi_q = 0.5 - 0.5 * level, 0.5 + 0.5 * level
    mean_parts, std_parts, lo_parts, hi_parts, probs_parts, cov_parts = [], [], [], [], [], []
    if h_exact > 0:
        if discrete:
            probs_parts.append(_probs(dist))
        else:
            mean, var, cov = moments(dist)
            mean_parts.append(mean)
            std_parts.append(var.clamp_min(0).sqrt())
            cov_parts.append(cov)
            lo_parts.append(distribution_quantile(dist, lo_q))
            hi_parts.append(distribution_quantile(dist, hi_q))
    if h_exact < horizon:
        rest = samples[:, :, h_exact:]
        if discrete:
            v = _probs(dist).shape[-1] if dist is not None else int(rest.max()) + 1
            onehot = torch.nn.functional.one_hot(rest, v).to(torch.float64)
            probs_parts.append(onehot.mean(1))
        else:
            counts = not rest.is_floating_point()
            r = rest.to(torch.float64)
            mean_parts.append(r.mean(1))
            spread = r.std(1, correction=1) if r.shape[1] > 1 else torch.zeros_like(r[:, 0])
            std_parts.append(spread)
            lo_parts.append(sample_quantile(rest, lo_q, counts=counts))
            hi_parts.append(sample_quantile(rest, hi_q, counts=counts))
    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=1)

    if discrete:
        probs = cat(probs_parts)
        mean, std, lower, upper, cov = probs.argmax(-1), None, None, None, None
    else:
        probs = None
        mean, std, lower, upper = (cat(p) for p in (mean_parts, std_parts, lo_parts, hi_parts))
        cov = cov_parts[0] if cov_parts and h_exact == horizon else None
    if not first_step_exact:
        method = APPROXIMATE_FIRST_STEP
    else:
        method = EXACT if h_exact == horizon else FIRST_STEP_EXACT
    fc = Forecast(
        mean=mean, std=std, lower=lower, upper=upper, level=float(level), cov=cov, probs=probs,
        samples=samples, index=index, method=method,
        num_exact_steps=h_exact, _dist=dist, _single=single,
    )
    if single:
        for name in ("mean", "std", "lower", "upper", "cov", "probs", "samples"):
            x = getattr(fc, name)
            if x is not None:
                setattr(fc, name, x[0])
    return fc


def _probs(dist: Distribution) -> torch.Tensor:
    if not isinstance(dist, Categorical):
        raise ValueError(
            f"a symbol forecast needs Categorical marginals, got {type(dist).__name__}")
    return dist.probs.to(torch.float64)


# ---------------------------------------------------------------------- distributions
def moments(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, variance, cov)`` of a predictive distribution with batch ``[N, H]``.

    ``mean`` and ``variance`` are ``[N, H]`` (``[N, H, D]`` for an event of D coordinates,
    the variances marginal); ``cov`` is ``[N, H, D, D]`` (D = 1 for scalar events). Mixtures
    use the law of total variance.
    """
    if isinstance(dist, MixtureSameFamily):
        w = dist.mixture_distribution.probs.to(torch.float64)
        comp = dist.component_distribution
        c_mean, _, c_cov = moments(comp)  # [N, H, M(, D)], [N, H, M, D, D]
        c_mean = c_mean if c_mean.ndim == w.ndim + 1 else c_mean.unsqueeze(-1)
        mean = (w[..., None] * c_mean).sum(-2)
        dev = c_mean - mean.unsqueeze(-2)
        cov = (w[..., None, None] * (c_cov + dev.unsqueeze(-1) * dev.unsqueeze(-2))).sum(-3)
    elif isinstance(dist, MultivariateNormal):
        mean, cov = dist.mean, dist.covariance_matrix
    elif isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1:
        mean = dist.mean
        cov = torch.diag_embed(dist.variance)
    elif isinstance(dist, Normal | Poisson) or not dist.event_shape:
        mean = dist.mean
        cov = dist.variance[..., None, None]
        return mean.to(torch.float64), dist.variance.to(torch.float64), cov.to(torch.float64)
    else:
        raise ValueError(f"no moments for a {type(dist).__name__} predictive")
    mean, cov = mean.to(torch.float64), cov.to(torch.float64)
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    if not dist.event_shape:
        return mean.squeeze(-1), var.squeeze(-1), cov
    return mean, var, cov


def mixture_marginals(
    dist: Distribution,
) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each coordinate's marginal as a mixture: ``(kind, weights, loc, scale)``.

    ``kind`` is ``"normal"`` (loc, scale are component means and standard deviations) or
    ``"poisson"`` (loc holds the rates, scale is None). Shapes ``[N, H(, D), M]``.
    """
    if isinstance(dist, MixtureSameFamily):
        w = dist.mixture_distribution.probs.to(torch.float64)  # [N, H, M]
        kind, _, loc, scale = mixture_marginals(dist.component_distribution)
        # component marginals are [N, H, M(, D), 1]: move M to the end
        loc = loc.squeeze(-1)
        scale = None if scale is None else scale.squeeze(-1)
        if dist.event_shape:
            loc = loc.movedim(-2, -1)
            scale = None if scale is None else scale.movedim(-2, -1)
            w = w.unsqueeze(-2).expand(loc.shape)
        return kind, w, loc, scale
    if isinstance(dist, Poisson):
        rate = dist.rate.to(torch.float64).unsqueeze(-1)
        return "poisson", torch.ones_like(rate), rate, None
    if isinstance(dist, Normal):
        loc = dist.loc.to(torch.float64).unsqueeze(-1)
        scale = dist.scale.to(torch.float64).unsqueeze(-1).expand(loc.shape)
        return "normal", torch.ones_like(loc), loc, scale
    if isinstance(dist, MultivariateNormal | Independent):
        mean, var, _ = moments(dist)
        loc = mean.unsqueeze(-1)
        return "normal", torch.ones_like(loc), loc, var.clamp_min(0).sqrt().unsqueeze(-1)
    raise ValueError(f"no marginal quantiles for a {type(dist).__name__} predictive")


def distribution_quantile(dist: Distribution, q: float) -> torch.Tensor:
    """The marginal q-quantile of every batch element and coordinate: ``[N, H(, D)]``."""
    kind, w, loc, scale = mixture_marginals(dist)
    if kind == "poisson":
        return _poisson_mixture_quantile(w, loc, q)
    if w.shape[-1] == 1:
        z = Normal(torch.zeros((), dtype=torch.float64), 1.0).icdf(
            torch.tensor(q, dtype=torch.float64))
        return loc[..., 0] + scale[..., 0] * z
    return _normal_mixture_quantile(w, loc, scale, q)


def _normal_mixture_quantile(w, loc, scale, q: float) -> torch.Tensor:
    """Bisection on the mixture CDF ``sum_m w_m Phi((x - loc_m) / scale_m) = q``."""
    lo = (loc - 40 * scale).amin(-1)
    hi = (loc + 40 * scale).amax(-1)
    std_normal = Normal(torch.zeros((), dtype=torch.float64), 1.0)
    for _ in range(_BISECTION_STEPS + 40):
        mid = 0.5 * (lo + hi)
        cdf = (w * std_normal.cdf((mid.unsqueeze(-1) - loc) / scale)).sum(-1)
        below = cdf < q
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _poisson_mixture_quantile(w, rate, q: float) -> torch.Tensor:
    """The smallest count n with ``sum_m w_m P(X_m <= n) >= q``."""
    lo = torch.full(rate.shape[:-1], -1.0, dtype=torch.float64)
    hi = (rate + 12 * rate.sqrt() + 20).amax(-1).ceil()
    steps = int(math.ceil(math.log2(float(hi.max()) + 2))) + 1
    for _ in range(steps):
        mid = torch.floor(0.5 * (lo + hi))
        cdf = (w * torch.special.gammaincc(mid.clamp_min(0).unsqueeze(-1) + 1, rate)).sum(-1)
        cdf = torch.where(mid < 0, torch.zeros_like(cdf), cdf)
        below = cdf < q
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return hi


def sample_quantile(samples: torch.Tensor, q: float, counts: bool = False) -> torch.Tensor:
    """Empirical q-quantile over the sample axis 1 of ``[N, S, H(, D)]``.

    Reals interpolate linearly; counts take the smallest sampled value with empirical
    CDF ``>= q``.
    """
    x = samples.to(torch.float64)
    if not counts:
        return torch.quantile(x, q, dim=1)
    s = x.shape[1]
    k = min(s - 1, max(0, math.ceil(q * s) - 1))
    return x.sort(dim=1).values.select(1, k)


def take_steps(dist: Distribution, steps: torch.Tensor) -> Distribution:
    """Batch ``[N, T]`` -> ``[N, 1]``: each row's distribution at its own step ``steps[i]``."""
    rows = torch.arange(steps.shape[0])

    def pick(x: torch.Tensor) -> torch.Tensor:
        return x[rows, steps].unsqueeze(1)

    return map_batch(dist, pick)


def map_batch(dist: Distribution, fn) -> Distribution:
    """Rebuild a predictive distribution with ``fn`` applied to every parameter tensor.

    ``fn`` acts on the leading batch axes ``[N, T]`` (and keeps any trailing axes).
    Supports the families the models return: Categorical, Normal, Poisson,
    MultivariateNormal, Independent and MixtureSameFamily of those.
    """
    if isinstance(dist, Categorical):
        return Categorical(probs=fn(dist.probs))
    if isinstance(dist, Normal):
        return Normal(fn(dist.loc), fn(dist.scale))
    if isinstance(dist, Poisson):
        return Poisson(fn(dist.rate))
    if isinstance(dist, MultivariateNormal):
        return MultivariateNormal(fn(dist.loc), scale_tril=fn(dist.scale_tril))
    if isinstance(dist, Independent):
        return Independent(map_batch(dist.base_dist, fn), dist.reinterpreted_batch_ndims)
    if isinstance(dist, MixtureSameFamily):
        return MixtureSameFamily(map_batch(dist.mixture_distribution, fn),
                                 map_batch(dist.component_distribution, fn))
    raise ValueError(f"cannot index a {type(dist).__name__} predictive by step")


# ---------------------------------------------------------------------- pandas indexes
def future_index(data: Any, horizon: int) -> pd.Index | None:
    """The H time points after a pandas input's last one, or None.

    Continues a ``PeriodIndex``, a ``DatetimeIndex`` with a frequency (set or inferred), a
    ``RangeIndex`` and an evenly spaced integer index. Other inputs give None; an irregular
    ``DatetimeIndex`` gives None with a warning.
    """
    if not isinstance(data, pd.Series | pd.DataFrame):
        return None
    idx = data.index
    if len(idx) == 0:
        return None
    if isinstance(idx, pd.PeriodIndex):
        return pd.period_range(idx[-1] + 1, periods=horizon, freq=idx.freq, name=idx.name)
    if isinstance(idx, pd.DatetimeIndex):
        # the frequency inferred as an offset (pd.infer_freq's string return is deprecated
        # and warns)
        freq = idx.freq or (pd.DatetimeIndex(idx, freq="infer").freq if len(idx) >= 3 else None)
        if freq is None:
            warnings.warn(
                "the DatetimeIndex has no regular frequency, so the forecast has no index "
                "(set one with Series.asfreq)", UserWarning, stacklevel=3)
            return None
        offset = pd.tseries.frequencies.to_offset(freq)
        return pd.date_range(idx[-1] + offset, periods=horizon, freq=offset, name=idx.name)
    if isinstance(idx, pd.RangeIndex):
        step = idx.step
        return pd.RangeIndex(idx[-1] + step, idx[-1] + step * (horizon + 1), step,
                             name=idx.name)
    if pd.api.types.is_integer_dtype(idx.dtype) and len(idx) >= 2:
        diffs = np.diff(idx.to_numpy())
        if (diffs == diffs[0]).all() and diffs[0] > 0:
            step = int(diffs[0])
            return pd.Index(int(idx[-1]) + step * np.arange(1, horizon + 1), name=idx.name)
    return None


def future_exog(exog: Any, data: Any, seqs: Any, horizon: int) -> Any | None:
    """The future rows of covariates given for the H future steps alone, or None when
    ``exog`` also covers the history.

    A pandas ``exog`` whose index continues the data's (the labels of
    :func:`future_index`) is aligned by label; an array with exactly H rows per sequence
    (``[H, E]``, ``[H]`` for one sequence, ``[N, H, E]``) is taken as the future rows.

    Returns:
        ``[N, H, E]`` float64 numpy array, or None.
    """
    n = len(seqs)
    if isinstance(exog, pd.Series | pd.DataFrame):
        if not isinstance(data, pd.Series | pd.DataFrame):
            rows = exog.to_numpy(dtype=float)
            return _future_rows(rows, n, horizon)
        if len(exog.index) >= len(data.index) and exog.index[: len(data.index)].equals(
                data.index):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = future_index(data, horizon)
        if labels is None or not labels.isin(exog.index).all():
            raise ValueError(
                "exog's index lines up neither with the data's (history and future) nor "
                f"with the {horizon} steps after it"
                + ("" if labels is None else f" ({labels[0]} .. {labels[-1]})"))
        rows = exog.loc[labels].to_numpy(dtype=float)
        return rows.reshape(1, horizon, -1)
    if isinstance(exog, list | tuple) and exog and not np.isscalar(exog[0]):
        try:
            rows = [np.asarray(e, dtype=float) for e in exog]
        except (TypeError, ValueError):
            return None
        if len(rows) == n and all(r.shape[0] == horizon for r in rows) and not bool(
                (seqs.lengths == 0).any()):
            return np.stack([r.reshape(horizon, -1) for r in rows])
        return None
    try:
        rows = np.asarray(exog.detach().cpu() if hasattr(exog, "detach") else exog, dtype=float)
    except (TypeError, ValueError):
        return None
    return _future_rows(rows, n, horizon)


def _future_rows(rows: np.ndarray, n: int, horizon: int) -> np.ndarray | None:
    if rows.ndim in (1, 2) and n == 1 and rows.shape[0] == horizon:
        return rows.reshape(1, horizon, -1)
    if rows.ndim == 3 and rows.shape[:2] == (n, horizon):
        return rows
    return None
