"""Duration distributions of the hidden semi-Markov model: pmf, initialisation, M-step.

Shape letters: K states, D the longest duration. Every family gives the pmf of the
durations d = 1..D, ``[K, D]``. The parametric ones are shifted by one and truncated at D
(renormalised over 1..D): ``"poisson"`` has ``d - 1 ~ Poisson(duration_rate)``,
``"negative_binomial"`` has ``d - 1 ~ NegBinomial(duration_count, duration_prob)`` in
scipy's convention (``nbinom.pmf(d - 1, n, p)``, mean ``n (1 - p) / p`` before
truncation). The M-step maximises ``sum_d counts[k, d] log pmf[k, d]`` for each state: in
closed form for the categorical family, numerically (a weighted maximum-likelihood fit of
the truncated family to the expected durations) for the others.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize, special

__all__ = ["DURATIONS", "Categorical", "Poisson", "NegativeBinomial"]


def _normalise(logp: np.ndarray) -> np.ndarray:
    """Rows of log weights -> a pmf (truncation by renormalising)."""
    logp = logp - special.logsumexp(logp, axis=-1, keepdims=True)
    return np.exp(logp)


class Categorical:
    """A free pmf over 1..D per state: ``duration [K, D]``."""

    names = ("duration",)

    @staticmethod
    def pmf(params: dict[str, torch.Tensor], dmax: int) -> torch.Tensor:
        return params["duration"]

    @staticmethod
    def init(k: int, dmax: int, typical: float) -> dict[str, torch.Tensor]:
        # Broad: half a geometric around the typical length, half Dirichlet noise.
        d = torch.arange(1, dmax + 1, dtype=torch.float64)
        geo = torch.exp(-d / max(typical, 1.0))
        geo = geo / geo.sum()
        noise = torch.distributions.Dirichlet(torch.ones(k, dmax, dtype=torch.float64)).sample()
        p = 0.5 * geo + 0.5 * noise
        return {"duration": p / p.sum(-1, keepdim=True)}

    @staticmethod
    def m_step(counts: torch.Tensor, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total = counts.sum(-1, keepdim=True)
        new = counts / torch.where(total > 0, total, torch.ones((), dtype=total.dtype))
        return {"duration": torch.where(total > 0, new, old["duration"])}

    @staticmethod
    def num_params(k: int, dmax: int) -> int:
        return k * (dmax - 1)


class Poisson:
    """``d - 1 ~ Poisson(duration_rate[k])`` truncated at D: ``duration_rate [K]``."""

    names = ("duration_rate",)

    @staticmethod
    def log_weights(rate: np.ndarray, dmax: int) -> np.ndarray:
        m = np.arange(dmax, dtype=np.float64)
        return special.xlogy(m, rate[:, None]) - special.gammaln(m + 1)

    @staticmethod
    def pmf(params: dict[str, torch.Tensor], dmax: int) -> torch.Tensor:
        rate = params["duration_rate"].detach().numpy()
        return torch.from_numpy(_normalise(Poisson.log_weights(rate, dmax)))

    @staticmethod
    def init(k: int, dmax: int, typical: float) -> dict[str, torch.Tensor]:
        base = min(typical, 0.5 * dmax)
        rate = base * torch.exp(0.3 * torch.randn(k, dtype=torch.float64))
        return {"duration_rate": rate}

    @staticmethod
    def m_step(counts: torch.Tensor, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = counts.numpy()
        dmax = c.shape[1]
        rate = old["duration_rate"].numpy().copy()
        m = np.arange(dmax, dtype=np.float64)
        for k in range(c.shape[0]):
            w = c[k]
            if w.sum() <= 0:
                continue
            target = (w @ m) / w.sum()  # the truncated mean must equal the weighted mean

            def excess(log_rate: float, target=target) -> float:
                p = _normalise(Poisson.log_weights(np.array([np.exp(log_rate)]), dmax))[0]
                return float(p @ m) - target

            if target <= 0:
                rate[k] = 0.0
                continue
            lo, hi = np.log(1e-12), np.log(1e6)
            if excess(lo) >= 0 or excess(hi) <= 0:  # the optimum is (nearly) on a boundary
                rate[k] = np.exp(lo if excess(lo) >= 0 else hi)
                continue
            rate[k] = np.exp(optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-14))
        return {"duration_rate": torch.from_numpy(rate)}

    @staticmethod
    def num_params(k: int, dmax: int) -> int:
        return k


class NegativeBinomial:
    """``d - 1 ~ NegBinomial(duration_count[k], duration_prob[k])`` truncated at D."""

    names = ("duration_count", "duration_prob")

    @staticmethod
    def log_weights(n: np.ndarray, p: np.ndarray, dmax: int) -> np.ndarray:
        m = np.arange(dmax, dtype=np.float64)
        n, p = n[:, None], p[:, None]
        return (special.gammaln(m + n) - special.gammaln(n) - special.gammaln(m + 1)
                + special.xlog1py(m, -p))

    @staticmethod
    def pmf(params: dict[str, torch.Tensor], dmax: int) -> torch.Tensor:
        n = params["duration_count"].detach().numpy()
        p = params["duration_prob"].detach().numpy()
        return torch.from_numpy(_normalise(NegativeBinomial.log_weights(n, p, dmax)))

    @staticmethod
    def init(k: int, dmax: int, typical: float) -> dict[str, torch.Tensor]:
        mean = min(typical, 0.5 * dmax) * torch.exp(0.3 * torch.randn(k, dtype=torch.float64))
        count = torch.full((k,), 2.0, dtype=torch.float64)
        return {"duration_count": count, "duration_prob": count / (count + mean)}

    @staticmethod
    def m_step(counts: torch.Tensor, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = counts.numpy()
        dmax = c.shape[1]
        m = np.arange(dmax, dtype=np.float64)
        n_old = old["duration_count"].numpy().copy()
        p_old = old["duration_prob"].numpy().copy()
        n_new, p_new = n_old.copy(), p_old.copy()
        for k in range(c.shape[0]):
            w = c[k]
            if w.sum() <= 0:
                continue

            wn = w / w.sum()
            target = wn @ m

            def objective(n: float, p: float, wn=wn) -> float:
                lw = NegativeBinomial.log_weights(np.array([n]), np.array([p]), dmax)[0]
                top = lw.max()
                seen = wn > 0  # 0 log 0 = 0 where a duration has no weight
                return float(wn[seen] @ lw[seen] - top - np.log(np.exp(lw - top).sum()))

            def best_prob(n: float, target=target) -> float:
                # For a fixed n the family is exponential in eta = log(1 - p) with statistic
                # d - 1: the maximising p matches the truncated mean to the weighted mean (or
                # lies on the boundary when no p does). Newton in eta (the mean's derivative
                # is the variance), kept inside a shrinking bracket.
                base = special.gammaln(m + n) - special.gammaln(m + 1)

                def moments(eta: float) -> tuple[float, float]:
                    lw = base + m * eta
                    e = np.exp(lw - lw.max())
                    e /= e.sum()
                    mu = float(e @ m)
                    return mu, max(float(e @ (m * m)) - mu * mu, 0.0)

                lo, hi = -60.0, -1e-12
                if moments(lo)[0] >= target:
                    return -float(np.expm1(lo))
                if moments(hi)[0] <= target:
                    return -float(np.expm1(hi))
                eta = -np.log1p(target / n) if target > 0 else lo  # the untruncated answer
                eta = min(max(eta, lo), hi)
                for _ in range(200):
                    mu, var = moments(eta)
                    diff = mu - target
                    if abs(diff) <= 1e-11 * (1.0 + target):
                        break
                    if diff > 0:
                        hi = eta
                    else:
                        lo = eta
                    step = eta - diff / var if var > 0 else 0.5 * (lo + hi)
                    step = step if lo < step < hi else 0.5 * (lo + hi)
                    if abs(step - eta) <= 1e-14 * (1.0 + abs(eta)):
                        break
                    eta = step
                return -float(np.expm1(eta))

            # The profile likelihood over log n (bounded Brent near the previous value: a
            # generalised M-step that improves the objective, as EM needs).
            a_old = np.log(n_old[k])
            res = optimize.minimize_scalar(
                lambda a: -objective(np.exp(a), best_prob(np.exp(a))),
                bounds=(max(a_old - 3.0, np.log(1e-3)), min(a_old + 3.0, np.log(1e6))),
                method="bounded", options={"xatol": 1e-6})
            n_k = float(np.exp(res.x))
            p_k = best_prob(n_k)
            if objective(n_k, p_k) < objective(n_old[k], p_old[k]):
                continue  # an M-step never lowers the objective
            n_new[k], p_new[k] = n_k, p_k
        return {"duration_count": torch.from_numpy(n_new),
                "duration_prob": torch.from_numpy(p_new)}

    @staticmethod
    def num_params(k: int, dmax: int) -> int:
        return 2 * k


DURATIONS = {"categorical": Categorical, "poisson": Poisson,
             "negative_binomial": NegativeBinomial}
