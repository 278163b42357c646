"""HMM emission distributions: log-likelihoods, sufficient statistics, M-steps, sampling.

Shape letters: N sequences, T steps, K states, D observation dimensions, V symbols. Each
emission works on a dict of parameter tensors (named as in ``params``) so that the model,
EM, gradient fitting and Pyro all share one code path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probseq.data import Sequences

__all__ = ["Categorical", "Gaussian", "Poisson", "EMISSIONS"]


class Categorical:
    """``x_t | z_t = k ~ Categorical(emission[k])``; parameters ``emission [K, V]``."""

    names = ("emission",)

    @staticmethod
    def log_lik(params: dict[str, torch.Tensor], seqs: Sequences) -> torch.Tensor:
        """``[N, T_max, K]``; computed time-major in memory (faster for the forward pass)."""
        log_e = torch.log(params["emission"]).T  # [V, K]
        return log_e[seqs.values.T].transpose(0, 1)

    @staticmethod
    def scaled_table(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b [V, K], m [V])``: per symbol, the emission probabilities divided by their
        largest over states, and the log of that largest (0 where no state emits it)."""
        e = params["emission"]  # [K, V]
        top = e.amax(0)  # [V]
        ok = top > 0
        b = (e / torch.where(ok, top, torch.ones((), dtype=top.dtype))).T.contiguous()
        m = torch.log(torch.where(ok, top, torch.ones((), dtype=top.dtype)))
        return b, m

    @staticmethod
    def values(seqs: Sequences, order: torch.Tensor, steps: int) -> torch.Tensor:
        """``[steps * N]`` time-major symbols of the rows ``order`` (padding read as 0)."""
        x = torch.where(seqs.mask, seqs.values, 0)[:, :steps]
        return x.T[:, order].reshape(-1)

    @staticmethod
    def stats(values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Expected counts ``emission_counts [K, V]`` from symbols ``[M]`` and posterior
        weights ``[M, K]`` (zero at padding)."""
        k = weights.shape[-1]
        x = values.numpy()
        v = int(x.max()) + 1
        # One bincount over (symbol, state) pairs: ~10x faster than index_add_ here.
        codes = (x[:, None] * k + np.arange(k)).reshape(-1)
        w = weights.reshape(-1).numpy()
        counts = np.bincount(codes, weights=w, minlength=v * k).reshape(v, k)
        return {"emission_counts": torch.from_numpy(counts.T.copy())}

    @staticmethod
    def m_step(stats: dict[str, torch.Tensor], old: dict[str, torch.Tensor],
               options: dict) -> dict[str, torch.Tensor]:
        counts = stats["emission_counts"]
        v = old["emission"].shape[1]
        if counts.shape[1] < v:
            counts = torch.cat([counts, counts.new_zeros(counts.shape[0], v - counts.shape[1])], 1)
        total = counts.sum(-1, keepdim=True)
        new = counts / torch.where(total > 0, total, torch.ones((), dtype=total.dtype))
        return {"emission": torch.where(total > 0, new, old["emission"])}

    @staticmethod
    def sample(params: dict[str, torch.Tensor], states: torch.Tensor) -> torch.Tensor:
        probs = params["emission"][states.reshape(-1)]
        return torch.multinomial(probs, 1).reshape(states.shape)

    @staticmethod
    def init(seqs: Sequences, k: int, options: dict) -> dict[str, torch.Tensor]:
        v = options["num_symbols"]
        freq = torch.bincount(seqs.values[seqs.mask], minlength=v).to(torch.float64) + 1.0
        freq = freq / freq.sum()
        noise = torch.distributions.Dirichlet(torch.ones(k, v, dtype=torch.float64)).sample()
        e = 0.5 * freq + 0.5 * noise
        return {"emission": e / e.sum(-1, keepdim=True)}

    @staticmethod
    def num_params(params: dict[str, torch.Tensor], options: dict) -> int:
        k, v = params["emission"].shape
        return k * (v - 1)


class Gaussian:
    """``x_t | z_t = k ~ Normal(means[k], covariances[k])``; ``means [K, D]``,
    ``covariances [K, D, D]`` (full or diagonal)."""

    names = ("means", "covariances")

    @staticmethod
    def log_lik(params: dict[str, torch.Tensor], seqs: Sequences) -> torch.Tensor:
        x = seqs.values3d().transpose(0, 1)  # [T, N, D]
        means, cov = params["means"], params["covariances"]
        d = means.shape[-1]
        var = torch.diagonal(cov, dim1=-2, dim2=-1)  # [K, D]
        if bool((cov == torch.diag_embed(var)).all()):
            # Diagonal covariances: elementwise, without [T, N, K, D] matrix products.
            if d == 1:
                z = (x - means[:, 0]) * torch.rsqrt(var[:, 0])  # [T, N, K]
                out = z * z
            else:
                z = (x[:, :, None, :] - means) * torch.rsqrt(var)
                out = (z * z).sum(-1)
            const = 0.5 * torch.log(var).sum(-1) + 0.5 * d * math.log(2 * math.pi)
            out.mul_(-0.5).sub_(const)
            return out.transpose(0, 1)
        chol = torch.linalg.cholesky(cov)
        eye = torch.eye(d, dtype=cov.dtype).expand_as(cov)
        inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)  # [K, D, D]
        diff = x[:, :, None, :] - means  # [T, N, K, D]
        z = torch.einsum("kij,tnkj->tnki", inv_chol, diff)
        half_log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        out = -0.5 * (z * z).sum(-1) - half_log_det - 0.5 * d * math.log(2 * math.pi)
        return out.transpose(0, 1)

    @staticmethod
    def values(seqs: Sequences, order: torch.Tensor, steps: int) -> torch.Tensor:
        """``[steps * N, D]`` time-major observations of the rows ``order``."""
        x = torch.where(seqs.mask[..., None], seqs.values3d(), 0.0)[:, :steps]
        return x.transpose(0, 1)[:, order].reshape(-1, x.shape[-1])

    @staticmethod
    def stats(values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``weight [K]``, ``sum_x [K, D]``, ``sum_xx [K, D, D]`` from observations ``[M, D]``
        and posterior weights ``[M, K]``."""
        w = weights.reshape(-1, weights.shape[-1])
        return {
            "weight": w.sum(0),
            "sum_x": w.T @ values,
            "sum_xx": torch.einsum("nk,ni,nj->kij", w, values, values),
        }

    @staticmethod
    def m_step(stats: dict[str, torch.Tensor], old: dict[str, torch.Tensor],
               options: dict) -> dict[str, torch.Tensor]:
        w = stats["weight"]
        ok = w > 1e-10
        ws = torch.where(ok, w, torch.ones((), dtype=w.dtype))
        means = stats["sum_x"] / ws[:, None]
        cov = stats["sum_xx"] / ws[:, None, None] - means[:, :, None] * means[:, None, :]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        if options["covariance_type"] == "diag":
            cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        # Floor the spectrum only where a state's covariance collapses.
        floor = options["min_covar"]
        eig = torch.linalg.eigvalsh(cov)
        low = eig.amin(-1) < floor
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
        cov = torch.where(low[:, None, None], cov + floor * eye, cov)
        means = torch.where(ok[:, None], means, old["means"])
        cov = torch.where(ok[:, None, None], cov, old["covariances"])
        return {"means": means, "covariances": cov}

    @staticmethod
    def sample(params: dict[str, torch.Tensor], states: torch.Tensor) -> torch.Tensor:
        means, cov = params["means"], params["covariances"]
        chol = torch.linalg.cholesky(cov)
        eps = torch.randn(*states.shape, means.shape[-1], dtype=means.dtype)
        return means[states] + (chol[states] @ eps[..., None]).squeeze(-1)

    @staticmethod
    def init(seqs: Sequences, k: int, options: dict) -> dict[str, torch.Tensor]:
        x = seqs.values3d()[seqs.mask]  # [S, D]
        d = x.shape[-1]
        idx = torch.randperm(x.shape[0])[:k]
        if idx.numel() < k:
            idx = torch.randint(x.shape[0], (k,))
        means = x[idx] + 1e-3 * x.std(0) * torch.randn(k, d, dtype=x.dtype)
        cov = torch.cov(x.T).reshape(d, d) if x.shape[0] > 1 else torch.eye(d, dtype=x.dtype)
        if options["covariance_type"] == "diag":
            cov = torch.diag_embed(torch.diagonal(cov))
        cov = cov + options["min_covar"] * torch.eye(d, dtype=x.dtype)
        return {"means": means, "covariances": cov.expand(k, d, d).clone()}

    @staticmethod
    def num_params(params: dict[str, torch.Tensor], options: dict) -> int:
        k, d = params["means"].shape
        cov = d if options["covariance_type"] == "diag" else d * (d + 1) // 2
        return k * (d + cov)


class Poisson:
    """``x_t | z_t = k ~ Poisson(rates[k])``; ``rates [K]`` (a rate of 0 is a point mass at 0)."""

    names = ("rates",)

    @staticmethod
    def log_lik(params: dict[str, torch.Tensor], seqs: Sequences) -> torch.Tensor:
        x = seqs.values.T.to(torch.float64)[..., None]  # [T, N, 1]
        rates = params["rates"]
        out = torch.xlogy(x, rates) - rates - torch.lgamma(x + 1)
        return out.transpose(0, 1)

    @staticmethod
    def values(seqs: Sequences, order: torch.Tensor, steps: int) -> torch.Tensor:
        """``[steps * N]`` time-major counts (float64) of the rows ``order``."""
        x = torch.where(seqs.mask, seqs.values, 0)[:, :steps]
        return x.T[:, order].reshape(-1).to(torch.float64)

    @staticmethod
    def stats(values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """``weight [K]`` and ``sum_x [K]`` from counts ``[M]`` and weights ``[M, K]``."""
        w = weights.reshape(-1, weights.shape[-1])
        return {"weight": w.sum(0), "sum_x": values @ w}

    @staticmethod
    def m_step(stats: dict[str, torch.Tensor], old: dict[str, torch.Tensor],
               options: dict) -> dict[str, torch.Tensor]:
        w = stats["weight"]
        ok = w > 1e-10
        rates = stats["sum_x"] / torch.where(ok, w, torch.ones((), dtype=w.dtype))
        return {"rates": torch.where(ok, rates, old["rates"])}

    @staticmethod
    def sample(params: dict[str, torch.Tensor], states: torch.Tensor) -> torch.Tensor:
        return torch.poisson(params["rates"][states]).to(torch.int64)

    @staticmethod
    def init(seqs: Sequences, k: int, options: dict) -> dict[str, torch.Tensor]:
        x = seqs.values[seqs.mask].to(torch.float64)
        q = torch.quantile(x, torch.linspace(0.1, 0.9, k, dtype=torch.float64))
        jitter = torch.exp(0.2 * torch.randn(k, dtype=torch.float64))
        return {"rates": (q + 0.1 * x.mean() + 1e-3) * jitter}

    @staticmethod
    def num_params(params: dict[str, torch.Tensor], options: dict) -> int:
        return params["rates"].shape[0]


EMISSIONS = {"categorical": Categorical, "gaussian": Gaussian, "poisson": Poisson}
