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
