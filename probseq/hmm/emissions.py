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


def _gather(values: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``values[rows, steps]``, gathered by NumPy on the CPU: torch's parallel gather leaves
    OpenMP threads spinning into the compiled recursions that follow (one core lost on a
    small machine, as in :func:`probseq.data.check_sequences`)."""
    if values.device.type != "cpu":
        return values[rows, steps]
    return torch.from_numpy(values.numpy()[rows.numpy(), steps.numpy()])


class Categorical:
    """``x_t | z_t = k ~ Categorical(emission[k])``; parameters ``emission [K, V]``."""

    names = ("emission",)

    @staticmethod
    def log_lik(params: dict[str, torch.Tensor], seqs: Sequences) -> torch.Tensor:
        """``[N, T_max, K]``; computed time-major in memory (faster for the forward pass)."""
        log_e = torch.log(params["emission"]).T.contiguous()  # [V, K]
        # Gathered time-major (index_select on the flat time-major symbols: about twice as
        # fast as advanced indexing), returned as an [N, T_max, K] view.
        n, t_max = seqs.values.shape
        out = log_e.index_select(0, seqs.values.T.reshape(-1)).view(t_max, n, -1).transpose(0, 1)
        if seqs.has_missing:  # a missing symbol's emission factor is 1
            out = torch.where(seqs.observed[..., None], out, torch.zeros((), dtype=out.dtype))
        return out

    @staticmethod
    def scaled_table(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b [V, K], m [V])``: per symbol, the emission probabilities divided by their
        largest over states, and the log of that largest (0 where no state emits it)."""
        # In NumPy: a handful of torch calls on these small arrays cost more than the
        # arithmetic (the NumPy kernels read the table as NumPy arrays anyway).
        e = params["emission"].detach().cpu().numpy()  # [K, V]
        top = e.max(0)  # [V]
        safe = np.where(top > 0, top, 1.0)
        b = np.ascontiguousarray((e / safe).T)
        return torch.from_numpy(b), torch.from_numpy(np.log(safe))

    @staticmethod
    def values(seqs: Sequences, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``[M]`` the symbols at the given (row, step) pairs."""
        return _gather(seqs.values, rows, steps)

    @staticmethod
    def stats(values: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Expected counts ``emission_counts [K, V]`` from symbols ``[M]`` and posterior
        weights ``[M, K]`` (zero at padding)."""
        from scipy.sparse import csr_matrix

        x = values.numpy()
        m, v = x.shape[0], int(x.max()) + 1 if x.size else 1
        # counts = onehot(x)^T @ weights, the one-hot [M, V] as a sparse matrix with one entry
        # per row: ~4x faster than one bincount over (symbol, state) pairs, which was ~10x
        # faster than index_add_.
        onehot = csr_matrix((np.ones(m), x, np.arange(m + 1)), shape=(m, v))
        counts = onehot.T @ weights.numpy()
        return {"emission_counts": torch.from_numpy(np.ascontiguousarray(counts.T))}

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
        freq = torch.bincount(seqs.values[seqs.observed], minlength=v).to(torch.float64) + 1.0
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
        """``[N, T_max, K]``. Missing coordinates are marginalised exactly: a step with some
        coordinates observed scores their marginal density ``N(x_o; mu_o, S_oo)``, a step
        with none observed scores 0 (an emission factor of 1)."""
        out = Gaussian._log_lik_complete(params, seqs)
        if not seqs.has_missing:
            return out
        obs = observed3d(seqs)
        full = obs.all(-1)
        out = torch.where(full[..., None], out, torch.zeros((), dtype=out.dtype))
        partial = obs.any(-1) & ~full & seqs.mask
        if partial.any():
            x = seqs.values3d()[partial]  # [S, D]
            patterns, inverse = torch.unique(obs[partial], dim=0, return_inverse=True)
            part = out[partial]
            for j, pat in enumerate(patterns):
                sel = inverse == j
                mvn = torch.distributions.MultivariateNormal(
                    params["means"][:, pat], params["covariances"][:, pat][:, :, pat])
                part[sel] = mvn.log_prob(x[sel][:, pat][:, None, :])
            out = out.clone()
            out[partial] = part
        return out

    @staticmethod
    def _log_lik_complete(params: dict[str, torch.Tensor], seqs: Sequences) -> torch.Tensor:
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
    def scaled_packed(params: dict[str, torch.Tensor], seqs: Sequences, rows: np.ndarray,
                      steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scaled emission likelihoods of the given (row, step) pairs, as
        :class:`probseq.hmm.inference.Scaled` takes them: ``b [M, K] = exp(log_lik - m)``
        and ``m [M]`` (the largest log-likelihood over states).

        Every state's whitened residual ``L_k^-1 (x - mu_k)`` comes out of one matrix product
        ``(x - c) W - o`` with ``W [D, K D]`` the stacked ``L_k^-T`` and ``o = L_k^-1
        (mu_k - c)`` (``c`` the mean of the means, which keeps the subtraction well
        conditioned); the squared norms are a second product with a block-summing matrix.
        """
        values = seqs.values3d()
        n, t_max = len(seqs), int(seqs.lengths.max())
        if rows.shape[0] == n * t_max:  # equal lengths: row after row, or time-major
            row_major = n == 1 or t_max == 1 or rows[1] == 0
            x = (values[:, :t_max] if row_major else values[:, :t_max].transpose(0, 1)).reshape(
                -1, values.shape[-1])
        else:
            x = values[torch.from_numpy(rows), torch.from_numpy(steps)]  # [M, D]
        means, cov = params["means"], params["covariances"]
        k, d = means.shape
        center = means.mean(0)
        chol = torch.linalg.cholesky(cov)
        eye = torch.eye(d, dtype=cov.dtype).expand_as(cov)
        inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # [K, D, D]
        half_log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        const = -half_log_det - 0.5 * d * math.log(2 * math.pi)  # [K]
        w = inv.permute(2, 0, 1).reshape(d, k * d).contiguous()  # w[j, k D + i] = inv[k, i, j]
        off = torch.einsum("kij,kj->ki", inv, means - center).reshape(k * d)
        if d == 1:  # elementwise: two fused passes instead of a product with inner size 1
            y = torch.addcmul(-off, x - center, w[0])  # [M, K]
            q = torch.addcmul(const, y, y, value=-0.5)
        else:
            y = torch.addmm(-off, x - center, w)  # [M, K D]
            y.square_()
            block = torch.kron(torch.eye(k, dtype=cov.dtype),
                               torch.full((d, 1), -0.5, dtype=cov.dtype))  # [K D, K]
            q = torch.addmm(const, y, block)
        m = q.amax(1)
        q.sub_(m[:, None]).exp_()
        return q.numpy(), m.numpy()

    @staticmethod
    def values(seqs: Sequences, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``[M, D]`` the observations at the given (row, step) pairs."""
        return _gather(seqs.values3d(), rows, steps)

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
    def stats_missing(params: dict[str, torch.Tensor], seqs: Sequences,
                      weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The statistics of :meth:`stats` on data with missing coordinates: exact EM
        expectations. Each state's missing coordinates enter through their conditional
        mean given the observed ones, ``E[x_u | x_o, z = k]``, and ``sum_xx`` gains the
        conditional covariance ``S_uu - S_uo S_oo^-1 S_ou`` on the missing block; steps with
        nothing observed contribute nothing.

        Args:
            params: the current parameters (the E-step's).
            seqs: the data.
            weights: ``[N, T_max, K]`` smoothed marginals (zero at padding).
        """
        obs = observed3d(seqs)
        x = seqs.values3d()
        means, cov = params["means"], params["covariances"]
        k, d = means.shape
        full = obs.all(-1) & seqs.mask
        wf, xf = weights[full], x[full]
        weight = wf.sum(0)
        sum_x = wf.T @ xf
        sum_xx = torch.einsum("sk,si,sj->kij", wf, xf, xf)
        partial = obs.any(-1) & ~obs.all(-1) & seqs.mask
        if partial.any():
            xp, wp = x[partial], weights[partial]
            patterns, inverse = torch.unique(obs[partial], dim=0, return_inverse=True)
            for j, o in enumerate(patterns):
                u = ~o
                sel = inverse == j
                xo, w = xp[sel][:, o], wp[sel]  # [S, O], [S, K]
                soo = cov[:, o][:, :, o]
                suo = cov[:, u][:, :, o]
                gain = torch.linalg.solve(soo, suo.transpose(-1, -2)).transpose(-1, -2)
                cond = cov[:, u][:, :, u] - gain @ suo.transpose(-1, -2)  # [K, U, U]
                xhat = xp[sel].expand(k, -1, -1).clone()  # [K, S, D]
                xhat[:, :, u] = means[:, None, u] + torch.einsum(
                    "kuo,kso->ksu", gain, xo[None] - means[:, None, o])
                weight = weight + w.sum(0)
                sum_x = sum_x + torch.einsum("sk,ksd->kd", w, xhat)
                sum_xx = sum_xx + torch.einsum("sk,ksi,ksj->kij", w, xhat, xhat)
                block = torch.zeros(k, d, d, dtype=cov.dtype)
                block[:, u.nonzero()[:, 0][:, None], u.nonzero()[:, 0][None, :]] = cond
                sum_xx = sum_xx + w.sum(0)[:, None, None] * block
        return {"weight": weight, "sum_x": sum_x, "sum_xx": sum_xx}

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
        # Floor the spectrum only where a state's covariance collapses, judged on the
        # covariance standardised by the data's variance per dimension (scale-free).
        floor = options["min_covar"]
        var = options["data_var"].to(cov.dtype)
        sd = torch.sqrt(var)
        eig = torch.linalg.eigvalsh(cov / (sd[:, None] * sd[None, :]))
        low = (eig.amin(-1) < floor) & ok
        cov = torch.where(low[:, None, None], cov + torch.diag(floor * var), cov)
        if "floored" in options:
            options["floored"].extend(int(i) for i in torch.nonzero(low).reshape(-1))
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
        x = imputed_steps(seqs)  # [S, D]
        d = x.shape[-1]
        idx = torch.randperm(x.shape[0])[:k]
        if idx.numel() < k:
            idx = torch.randint(x.shape[0], (k,))
        means = x[idx] + 1e-3 * x.std(0) * torch.randn(k, d, dtype=x.dtype)
        cov = torch.cov(x.T).reshape(d, d) if x.shape[0] > 1 else torch.eye(d, dtype=x.dtype)
        if options["covariance_type"] == "diag":
            cov = torch.diag_embed(torch.diagonal(cov))
        var = options["data_var"]
        if var is None:
            var = x.var(0, unbiased=False) if x.shape[0] > 1 else torch.ones(d, dtype=x.dtype)
        cov = cov + torch.diag(options["min_covar"] * var.to(x.dtype))
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
        if seqs.has_missing:  # a missing count's emission factor is 1
            out = torch.where(seqs.observed.T[..., None], out, torch.zeros((), dtype=out.dtype))
        return out.transpose(0, 1)

    @staticmethod
    def values(seqs: Sequences, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``[M]`` counts (float64) at the given (row, step) pairs."""
        return _gather(seqs.values, rows, steps).to(torch.float64)

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
        x = seqs.values[seqs.observed].to(torch.float64)
        q = torch.quantile(x, torch.linspace(0.1, 0.9, k, dtype=torch.float64))
        jitter = torch.exp(0.2 * torch.randn(k, dtype=torch.float64))
        return {"rates": (q + 0.1 * x.mean() + 1e-3) * jitter}

    @staticmethod
    def num_params(params: dict[str, torch.Tensor], options: dict) -> int:
        return params["rates"].shape[0]


def observed3d(seqs: Sequences) -> torch.Tensor:
    """``[N, T_max, D]`` bool observed mask of real-valued data (D=1 for univariate)."""
    obs = seqs.observed
    return obs[..., None] if obs.dim() == 2 else obs


def observed_variance(seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """``(var [D], count [D])``: each dimension's variance over its observed values (the
    divisor is the count) and how many values it has."""
    obs = observed3d(seqs)
    x = seqs.values3d()
    count = obs.sum((0, 1))
    n = count.clamp_min(1).to(x.dtype)
    mean = torch.where(obs, x, torch.zeros((), dtype=x.dtype)).sum((0, 1)) / n
    dev = torch.where(obs, x - mean, torch.zeros((), dtype=x.dtype))
    return (dev * dev).sum((0, 1)) / n, count


def imputed_steps(seqs: Sequences) -> torch.Tensor:
    """``[S, D]`` the steps with at least one observed value, missing coordinates replaced
    by their dimension's observed mean (for initialisation only)."""
    obs = observed3d(seqs)
    x = seqs.values3d()
    keep = obs.any(-1) & seqs.mask
    if not seqs.has_missing:
        return x[keep]
    n = obs.sum((0, 1)).clamp_min(1).to(x.dtype)
    mean = torch.where(obs, x, torch.zeros((), dtype=x.dtype)).sum((0, 1)) / n
    return torch.where(obs, x, mean)[keep]


EMISSIONS = {"categorical": Categorical, "gaussian": Gaussian, "poisson": Poisson}
