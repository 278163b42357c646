"""Tiny exact models used to test the spine (base class, compare) independently of the
model families."""

from __future__ import annotations

import torch

from probseq.base import SequenceModel


class IIDCategorical(SequenceModel):
    """x_t ~ Categorical(probs) independently; exact and trivially checkable."""

    data_kind = "discrete"

    def __init__(self, num_symbols: int | None = None, alpha: float = 0.0):
        self.num_symbols = num_symbols
        self.alpha = alpha
        self.probs: torch.Tensor | None = None

    def _fit(self, seqs, **options):
        v = self._fit_num_symbols(seqs)
        counts = torch.bincount(seqs.values[seqs.mask], minlength=v).double() + self.alpha
        self.num_symbols = v
        self.probs = counts / counts.sum()

    def _log_prob_steps(self, seqs):
        return torch.where(seqs.mask, self.probs.log()[seqs.values], 0.0)

    def _sample(self, n, length, prefix, **options):
        x = torch.multinomial(self.probs, n * length, replacement=True).view(n, length)
        if prefix is not None:
            x[:, : len(prefix)] = prefix
        return x

    @property
    def num_params(self):
        return self.num_symbols - 1

    def _is_fitted(self):
        return self.probs is not None

    def get_config(self):
        return {"num_symbols": self.num_symbols, "alpha": self.alpha}

    def _state_tensors(self):
        return {"probs": self.probs}

    def _load_state(self, tensors, meta):
        self.probs = tensors["probs"]


class IIDGaussian(SequenceModel):
    """x_t ~ N(mean, var) independently, univariate."""

    data_kind = "continuous"

    def __init__(self):
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def _fit(self, seqs, **options):
        self._obs_dim = self._fit_obs_dim(seqs, univariate_only=True)
        x = seqs.values[seqs.mask]
        self.mean, self.var = x.mean(), x.var(unbiased=False)

    def _log_prob_steps(self, seqs):
        d = torch.distributions.Normal(self.mean, self.var.sqrt())
        return torch.where(seqs.mask, d.log_prob(seqs.values), 0.0)

    def _sample(self, n, length, prefix, **options):
        x = self.mean + self.var.sqrt() * torch.randn(n, length, dtype=torch.float64)
        if prefix is not None:
            x[:, : len(prefix)] = prefix
        return x

    @property
    def num_params(self):
        return 2

    def _is_fitted(self):
        return self.mean is not None

    def get_config(self):
        return {}

    def _state_tensors(self):
        return {"mean": self.mean, "var": self.var}

    def _load_state(self, tensors, meta):
        self.mean, self.var = tensors["mean"], tensors["var"]
        self._obs_dim = None


class IIDRegression(IIDGaussian):
    """x_t ~ N(mean + beta . exog_t, var) independently, with missing values marginalised
    (an independent model: a missing step contributes nothing). Tests the exog and missing
    plumbing of the base class."""

    supports_exog = True
    supports_missing = True

    def _fit(self, seqs, *, exog=None, shrink: float = 0.0):
        self._obs_dim = self._fit_obs_dim(seqs, univariate_only=True)
        obs = seqs.observed
        e = exog.shape[-1] if exog is not None else 0
        design = torch.cat([torch.ones(*seqs.values.shape, 1, dtype=torch.float64)]
                           + ([exog[:, : seqs.max_length]] if exog is not None else []), -1)
        coef = torch.linalg.lstsq(design[obs], seqs.values[obs].unsqueeze(-1)).solution[:, 0]
        self.mean, self.beta = coef[0], coef[1:] * (1 - shrink)
        resid = seqs.values[obs] - design[obs] @ torch.cat([self.mean[None], self.beta])
        self.var = resid.pow(2).mean()
        self._num_exog = e

    @property
    def num_exog(self):
        return getattr(self, "_num_exog", 0)

    def _loc(self, shape, exog):
        if exog is None:
            return self.mean.expand(shape)
        return self.mean + exog[:, : shape[1]] @ self.beta

    def _log_prob_steps(self, seqs, exog=None):
        d = torch.distributions.Normal(self._loc(seqs.values.shape, exog), self.var.sqrt())
        return torch.where(seqs.observed, d.log_prob(seqs.values), 0.0)

    def _sample(self, n, length, prefix, exog=None, prefix_observed=None):
        loc = self._loc((n, length), exog)
        x = loc + self.var.sqrt() * torch.randn(n, length, dtype=torch.float64)
        if prefix is not None:
            keep = torch.ones(len(prefix), dtype=torch.bool) if prefix_observed is None else (
                prefix_observed)
            x[:, : len(prefix)] = torch.where(keep, prefix, x[:, : len(prefix)])
        return x

    def _state_tensors(self):
        return {"mean": self.mean, "var": self.var, "beta": self.beta}

    def _load_state(self, tensors, meta):
        super()._load_state(tensors, meta)
        self.beta = tensors["beta"]
