"""The linear-Gaussian state-space model (Kalman filter likelihood)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probseq._utils import progress_bar
from probseq.base import SequenceModel
from probseq.data import Sequences
from probseq.forecast import Forecast
from probseq.lgssm import inference

__all__ = ["LinearGaussianSSM", "StatePosterior", "Forecast"]

PARAM_NAMES = (
    "initial_mean",
    "initial_cov",
    "transition_matrix",
    "transition_cov",
    "observation_matrix",
    "observation_cov",
)
#: a "diffuse" prior is proper: its variance is this many times the data's (or noise's) scale.
DIFFUSE_FACTOR = 1e6
_SYM_TOL = 1e-8


@dataclass
class StatePosterior:
    """Posterior marginals of the latent state (from ``filter`` or ``smoother``).

    Attributes:
        mean: ``[N, T_max, S]`` (``[T, S]`` for one sequence).
        cov: ``[N, T_max, S, S]`` (``[T, S, S]`` for one sequence).

    Padded steps repeat the values at the sequence's last step.
    """

    mean: torch.Tensor
    cov: torch.Tensor


class LinearGaussianSSM(SequenceModel):
    """Linear-Gaussian state-space model with an exact Kalman-filter likelihood.

    Generative process (``z_0`` is the state AT the first observation, as in statsmodels and
    Durbin & Koopman)::

        z = N(initial_mean, initial_cov).sample()
        for t in range(T):
            if t > 0:
                z = transition_matrix @ z + N(0, transition_cov).sample()
            x[t] = observation_matrix @ z + N(0, observation_cov).sample()

    Parameters (``.params``): ``initial_mean [S]``, ``initial_cov [S, S]``,
    ``transition_matrix [S, S]``, ``transition_cov [S, S]``, ``observation_matrix [D, S]``,
    ``observation_cov [D, D]``.

    Univariate rule: a model with D = 1 is univariate. It accepts 1-D ``[T]`` data (and
    ``[T, 1]``), ``sample`` returns 1-D sequences and ``forecast`` drops the D axis. Models
    with D >= 2 take and return ``[T, D]``.

    Build one with :meth:`from_params`, :meth:`local_level`, :meth:`local_linear_trend`, or
    ``LinearGaussianSSM(state_dim=S).fit(data)`` (maximum likelihood over every parameter,
    L-BFGS on an unconstrained parametrisation).

    Args:
        state_dim: S.
        obs_dim: D; None infers it from the data at ``fit``.
        structure: a structured model (JSON-able; built by :meth:`local_level` and
            :meth:`local_linear_trend`): fixed ``transition_matrix`` and
            ``observation_matrix``, diagonal noise covariances whose entries are
            ``transition_vars`` / ``observation_vars`` lists of ``[name, value or None]``
            (None = estimated by ``fit``), and ``initial_mean`` (list or None) and
            ``initial_var`` (number or None; ``initial_cov = initial_var * I``), where None
            means chosen from the data at fit time (see :meth:`local_level`).
    """

    data_kind = "continuous"

    def __init__(
        self,
        state_dim: int = 1,
        obs_dim: int | None = None,
        structure: dict[str, Any] | None = None,
    ):
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(f"state_dim must be a positive integer, got {state_dim!r}")
        if obs_dim is not None and (
            isinstance(obs_dim, bool) or not isinstance(obs_dim, int) or obs_dim < 1
        ):
            raise ValueError(f"obs_dim must be a positive integer or None, got {obs_dim!r}")
        self.state_dim = state_dim
        self.obs_dim = obs_dim
        self.structure = _check_structure(structure, state_dim, obs_dim)
        if self.structure is not None:
            self.obs_dim = len(self.structure["observation_matrix"])
        self._obs_dim = self.obs_dim if self.obs_dim is not None else "any"
        self._params: dict[str, torch.Tensor] | None = None
        self.fit_result_: dict[str, Any] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(
        cls,
        initial_mean: Any,
        initial_cov: Any,
        transition_matrix: Any,
        transition_cov: Any,
        observation_matrix: Any,
        observation_cov: Any,
    ) -> LinearGaussianSSM:
        """A fitted model from explicit parameters (see the class docstring for shapes).

        ``observation_cov`` must be symmetric positive definite; ``initial_cov`` and
        ``transition_cov`` symmetric positive semi-definite (a known initial state or a
        degenerate noise, as in the smooth-trend model, is allowed). Every step's predictive
        covariance is then positive definite, so the density is proper.

        Raises:
            ValueError: a shape disagrees, a value is not finite, a covariance is not
                symmetric (within 1e-8 relative) or not positive (semi-)definite.
        """
        params = _check_params(
            dict(
                initial_mean=initial_mean,
                initial_cov=initial_cov,
                transition_matrix=transition_matrix,
                transition_cov=transition_cov,
                observation_matrix=observation_matrix,
                observation_cov=observation_cov,
            )
        )
        S, D = params["observation_matrix"].shape[1], params["observation_matrix"].shape[0]
        model = cls(state_dim=S, obs_dim=D)
        model._params = params
        return model

    @classmethod
    def local_level(
        cls,
        level_var: float | None = None,
        obs_var: float | None = None,
        *,
        initial_mean: float | None = None,
        initial_var: float | None = None,
    ) -> LinearGaussianSSM:
        """The local level model (random walk plus noise), S = D = 1.

        ``level_t = level_(t-1) + N(0, level_var)``, ``x_t = level_t + N(0, obs_var)``.

        With both variances given the model is ready to use. A variance left as None is
        estimated by ``fit`` (the others stay fixed), as in statsmodels'
        ``UnobservedComponents``.

        The initial level has a *proper* prior, so that ``log_prob`` is an exact density of
        all T observations (statsmodels' exact diffuse likelihood instead drops the first
        observation's term, which is not a density). ``initial_mean=None`` and
        ``initial_var=None`` choose a nearly diffuse prior: at ``fit`` time the mean of the
        sequences' first observations and ``1e6`` times the data's variance; for a model
        built with both variances given, ``0`` and ``1e6 * max(level_var, obs_var)``. The
        chosen prior is stored with the model and used for every later ``log_prob``.
        """
        return cls._structured(
            [[1.0]], [[1.0]], [["level_var", level_var]], [["obs_var", obs_var]],
            initial_mean, initial_var,
        )

    @classmethod
    def local_linear_trend(
        cls,
        level_var: float | None = None,
        slope_var: float | None = None,
        obs_var: float | None = None,
        *,
        initial_mean: Any | None = None,
        initial_var: float | None = None,
    ) -> LinearGaussianSSM:
        """The local linear trend model, S = 2 (level, slope), D = 1.

        ``level_t = level_(t-1) + slope_(t-1) + N(0, level_var)``,
        ``slope_t = slope_(t-1) + N(0, slope_var)``, ``x_t = level_t + N(0, obs_var)``.
        ``slope_var=0`` gives the smooth-trend model. Unknown variances and the prior work as
        in :meth:`local_level` (the initial mean defaults to ``[first value, 0]``).
        """
        return cls._structured(
            [[1.0, 1.0], [0.0, 1.0]], [[1.0, 0.0]],
            [["level_var", level_var], ["slope_var", slope_var]], [["obs_var", obs_var]],
            initial_mean, initial_var,
        )

    @classmethod
    def _structured(cls, A, C, tvars, ovars, initial_mean, initial_var) -> LinearGaussianSSM:
        if initial_mean is not None:
            initial_mean = np.atleast_1d(np.asarray(initial_mean, dtype=float)).tolist()
        if initial_var is not None:
            initial_var = float(initial_var)
        structure = {
            "transition_matrix": A,
            "observation_matrix": C,
            "transition_vars": [[n, None if v is None else float(v)] for n, v in tvars],
            "observation_vars": [[n, None if v is None else float(v)] for n, v in ovars],
            "initial_mean": initial_mean,
            "initial_var": initial_var,
        }
        model = cls(state_dim=len(A), obs_dim=len(C), structure=structure)
        if not model._free_names():
            variances = [v for _, v in tvars + ovars]
            scale = max(variances) if max(variances) > 0 else 1.0
            mean = initial_mean if initial_mean is not None else [0.0] * len(A)
            var = initial_var if initial_var is not None else DIFFUSE_FACTOR * scale
            model._params = model._structured_params(
                torch.zeros(0, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64),
                torch.tensor(var, dtype=torch.float64),
            )
        return model

    # ------------------------------------------------------------------ protocol
    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The parameters, named as in CONTRACT.md (copies)."""
        self._check_fitted()
        return {k: v.clone() for k, v in self._params.items()}

    @property
    def num_params(self) -> int:
        if self.structure is not None:
            return len(self._free_names())
        S, D = self.state_dim, self.obs_dim
        if D is None:
            self._check_fitted()
        return S * S + D * S + S * (S + 1) + D * (D + 1) // 2 + S

    def _is_fitted(self) -> bool:
        return self._params is not None

    def get_config(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "obs_dim": self.obs_dim, "structure": self.structure}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._params)

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        params = _check_params({k: tensors[k] for k in PARAM_NAMES})
        if params["observation_matrix"].shape != (self.obs_dim, self.state_dim):
            raise ValueError("saved parameters do not match the saved configuration")
        self._params = params

    def _matrices(self, params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        p = self._params if params is None else params
        return tuple(p[k] for k in PARAM_NAMES)

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        res = inference.kalman_filter(seqs.values3d(), *self._matrices())
        return torch.where(seqs.mask, res.log_prob_steps, torch.zeros((), dtype=torch.float64))

    # ------------------------------------------------------------------ posterior
    @torch.no_grad()
    def filter(self, data: Any) -> StatePosterior:
        """Filtered state marginals ``p(z_t | x_0..x_t)``.

        Returns:
            A :class:`StatePosterior` with ``mean [N, T_max, S]`` and ``cov [N, T_max, S, S]``
            (``[T, S]``, ``[T, S, S]`` for one sequence).
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        res = inference.kalman_filter(seqs.values3d(), *self._matrices())
        t_idx = _carry_index(seqs)  # [N, T]
        mean = torch.gather(res.filt_mean, 1, t_idx.unsqueeze(-1).expand_as(res.filt_mean))
        cov = res.covs.filt_cov[res.covs.index(seqs.max_length)[t_idx]]
        out = StatePosterior(mean, cov)
        return StatePosterior(mean[0], cov[0]) if single else out

    @torch.no_grad()
    def smoother(self, data: Any) -> StatePosterior:
        """Smoothed state marginals ``p(z_t | x_0..x_(T-1))`` (Rauch-Tung-Striebel).

        Returns:
            A :class:`StatePosterior` shaped as in :meth:`filter`.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        mean, cov, _, _ = _smoothed(seqs, self._params)
        return StatePosterior(mean[0], cov[0]) if single else StatePosterior(mean, cov)

    @torch.no_grad()
    def forecast(self, data: Any, horizon: int, level: float = 0.95) -> Forecast:
        """Predictive means and intervals of the next ``horizon`` observations.

        Args:
            data: the observed sequences; each forecast starts after its last step.
            horizon: H >= 1.
            level: coverage of the central prediction intervals, in (0, 1).

        Returns:
            A :class:`Forecast`.
        """
        from scipy.stats import norm

        self._check_fitted()
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
        seqs, single = self._coerce(data)
        m0, P0, A, Q, C, R = self._matrices()
        res = inference.kalman_filter(seqs.values3d(), m0, P0, A, Q, C, R)
        last = seqs.lengths - 1
        mean = res.filt_mean[torch.arange(len(seqs)), last]
        cov = res.covs.filt_cov[res.covs.index(seqs.max_length)[last]]
        obs_mean, obs_cov = inference.forecast_moments(mean, cov, A, Q, C, R, horizon)
        std = torch.diagonal(obs_cov, dim1=-2, dim2=-1).sqrt()
        z = float(norm.ppf(0.5 + 0.5 * float(level)))
        lower, upper = obs_mean - z * std, obs_mean + z * std
        outs = [obs_mean, std, lower, upper]
        if self.obs_dim == 1:
            outs = [o[..., 0] for o in outs]
        if single:
            outs = [o[0] for o in outs]
            obs_cov = obs_cov[0]
        m, s, lo, up = outs
        return Forecast(mean=m, std=s, lower=lo, upper=up, level=float(level), cov=obs_cov,
                        num_exact_steps=horizon, _single=single)

    # ------------------------------------------------------------------ sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"unknown sample options: {sorted(options)}")
        m0, P0, A, Q, C, R = self._matrices()
        S, D = self.state_dim, self.obs_dim
        n = num_sequences
        if prefix is None:
            start = m0 + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(P0).T
            steps = length
        else:
            pre = prefix.to(torch.float64).reshape(prefix.shape[0], D)
            res = inference.kalman_filter(pre.unsqueeze(0), m0, P0, A, Q, C, R)
            mf = res.filt_mean[0, -1]
            Pf = res.covs.filt_cov[res.covs.index(pre.shape[0])[-1]]
            last = mf + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(Pf).T
            steps = length - pre.shape[0]
            start = last @ A.T + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(Q).T
        if steps > 0:
            w = torch.randn(n, steps, S, dtype=torch.float64) @ _psd_sqrt(Q).T
            w[:, 0] = start
            z = inference.linear_recurrence(w, A, torch.zeros(n, S, dtype=torch.float64))
            x = z @ C.T + torch.randn(n, steps, D, dtype=torch.float64) @ _psd_sqrt(R).T
        else:
            x = torch.zeros(n, 0, D, dtype=torch.float64)
        if prefix is not None:
            x = torch.cat([pre.expand(n, -1, -1), x], dim=1)
        return x[..., 0] if D == 1 else x

    # ------------------------------------------------------------------ fitting
    def _free_names(self) -> list[str]:
        if self.structure is None:
            return []
        slots = self.structure["transition_vars"] + self.structure["observation_vars"]
        return [name for name, value in slots if value is None]

    def _structured_params(
        self, free: torch.Tensor, initial_mean: torch.Tensor, initial_var: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Parameters of a structured model from its free variances (differentiable)."""
        st = self.structure
        it = iter(free.unbind(0)) if free.numel() else iter(())
        tv = [next(it) if v is None else torch.tensor(v, dtype=torch.float64)
              for _, v in st["transition_vars"]]
        ov = [next(it) if v is None else torch.tensor(v, dtype=torch.float64)
              for _, v in st["observation_vars"]]
        S = self.state_dim
        return {
            "initial_mean": initial_mean.to(torch.float64).reshape(S),
            "initial_cov": initial_var.to(torch.float64) * torch.eye(S, dtype=torch.float64),
            "transition_matrix": torch.tensor(st["transition_matrix"], dtype=torch.float64),
            "transition_cov": torch.diag(torch.stack(tv)),
            "observation_matrix": torch.tensor(st["observation_matrix"], dtype=torch.float64),
            "observation_cov": torch.diag(torch.stack(ov)),
        }

    def _data_prior(self, seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
        """The structured model's initial mean and variance (given, or chosen from data)."""
        st = self.structure
        y = seqs.values3d()
        if st["initial_mean"] is not None:
            mean = torch.tensor(st["initial_mean"], dtype=torch.float64)
        else:
            C = torch.tensor(st["observation_matrix"], dtype=torch.float64)
            mean = torch.linalg.pinv(C) @ y[:, 0].mean(0)
        if st["initial_var"] is not None:
            var = torch.tensor(st["initial_var"], dtype=torch.float64)
        else:
            scale = float(y[seqs.mask].var()) if seqs.num_steps > 1 else 0.0
            var = torch.tensor(DIFFUSE_FACTOR * (scale if scale > 0 else 1.0), dtype=torch.float64)
        return mean, var

    def _fit(
        self,
        seqs: Sequences,
        *,
        max_epochs: int = 500,
        seed: int | None = None,
        progress: bool | None = None,
        tol: float = 1e-10,
        em_epochs: int = 0,
        **unknown: Any,
    ) -> None:
        """Maximum likelihood by L-BFGS-B (scipy) with exact gradients (torch autograd).

        Options:
            max_epochs: the most L-BFGS iterations.
            seed: seeds the random start of unstructured models.
            progress: a progress bar (None: when stderr is a terminal).
            tol: stop when the objective (nats per step) changes by less than this,
                relatively.
            em_epochs: unstructured models only: EM iterations that warm-start L-BFGS.
        """
        from scipy.optimize import minimize

        unknown.pop("batch_size", None)
        unknown.pop("learning_rate", None)
        if unknown:
            raise ValueError(f"unknown fit options for {self.name}: {sorted(unknown)}")
        D = self._fit_obs_dim(seqs) or 1
        if self.obs_dim is None:
            self.obs_dim, self._obs_dim = D, D
        y = seqs.values3d()
        mask = seqs.mask
        n_steps = seqs.num_steps
        if self.structure is not None:
            prior_mean, prior_var = self._data_prior(seqs)
            names = self._free_names()
            if not names:
                self._params = self._structured_params(torch.zeros(0), prior_mean, prior_var)
                return
            scale = _diff_variance(seqs)
            x0 = np.full(len(names), math.log(0.5))
            bounds = [(math.log(1e-12), math.log(1e8))] * len(names)

            def build(theta: torch.Tensor) -> dict[str, torch.Tensor]:
                return self._structured_params(scale * torch.exp(theta), prior_mean, prior_var)
        else:
            unpack, x0, pack = _unstructured_parametrisation(seqs, self.state_dim, D)
            if em_epochs > 0:
                self._fit_em(seqs, D, em_epochs, tol, progress)
                x0 = pack(self._params)
            bounds = None
            build = unpack

        def objective(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
            theta = torch.tensor(theta_np, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                params = build(theta)
                res = inference.kalman_filter(y, *(params[k] for k in PARAM_NAMES))
                loss = -torch.where(mask, res.log_prob_steps, 0.0).sum() / n_steps
                if not torch.isfinite(loss):
                    return 1e10, np.zeros_like(theta_np)
                loss.backward()
            return float(loss.detach()), theta.grad.numpy().copy()

        bar = progress_bar(max_epochs, progress, f"{self.name} fit")
        try:
            result = minimize(
                objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                callback=lambda *_: bar.update(1),
                options={"maxiter": max_epochs, "ftol": tol, "gtol": 1e-9, "maxcor": 20},
            )
        finally:
            bar.close()
        with torch.no_grad():
            params = build(torch.tensor(result.x, dtype=torch.float64))
        self._params = _check_params({k: v.detach() for k, v in params.items()})
        self.fit_result_ = {
            "converged": bool(result.success),
            "message": str(result.message),
            "iterations": int(result.nit),
            "log_lik": -float(result.fun) * n_steps,
        }

    def _fit_em(self, seqs: Sequences, D: int, max_epochs: int, tol: float,
                progress: bool | None) -> None:
        """EM (Shumway-Stoffer) for the full model: closed-form M-steps on smoothed
        moments; the log-likelihood never decreases."""
        unpack, x0, _ = _unstructured_parametrisation(seqs, self.state_dim, D)
        params = {k: v.detach() for k, v in unpack(torch.tensor(x0)).items()}
        y, mask, n_steps = seqs.values3d(), seqs.mask, seqs.num_steps
        eye_s = torch.eye(self.state_dim, dtype=torch.float64)
        prev = -math.inf
        converged = False
        bar = progress_bar(max_epochs, progress, f"{self.name} fit (EM)")
        iterations = 0
        with torch.no_grad():
            try:
                for epoch in range(1, max_epochs + 1):
                    iterations = epoch
                    mean, cov, cross, log_lik = _smoothed(seqs, params)
                    total = float(log_lik.sum()) / n_steps
                    new = inference.em_m_step(y, mask, mean, cov, cross)
                    # keep the state covariances positive definite (a degenerate P0 or Q
                    # is an EM fixed point that stops learning)
                    for k in ("initial_cov", "transition_cov"):
                        if k in new:
                            scale = float(torch.diagonal(new[k]).mean().clamp(min=1e-300))
                            new[k] = new[k] + 1e-9 * scale * eye_s
                    candidate = dict(params, **new)
                    bar.update(1)
                    if abs(total - prev) < tol * max(1.0, abs(total)):
                        converged = True
                        break
                    prev = total
                    params = candidate
            finally:
                bar.close()
        self._params = _check_params(params)
        self.fit_result_ = {
            "converged": converged,
            "message": "EM",
            "iterations": iterations,
            "log_lik": float(self._log_prob(seqs).sum()),
        }

    # ------------------------------------------------------------------ Pyro
    def pyro_model(self, data: Any, *, prior_scale: float | None = None):
        """A Pyro model whose likelihood is this model's exact marginal likelihood.

        The noise variances get ``HalfCauchy(prior_scale)`` priors (``prior_scale=None``: the
        variance of the data's first differences) and the data enter through
        ``pyro.factor("log_lik", ...)`` with the Kalman-filter log density (ragged batches
        included), so the model works with SVI and NUTS.

        * Structured models: the free variances (e.g. ``level_var``, ``obs_var``) are sampled
          under their names; fixed ones stay fixed; the initial prior is chosen as in ``fit``.
        * Other models (fitted or from ``from_params``): ``transition_var [S]`` and
          ``observation_var [D]`` are sampled and ``Q``, ``R`` become those diagonals, while
          the matrices and the initial state keep their current values.

        Returns:
            A function with no arguments; each site's name is its variance's name.
        """
        import pyro
        import pyro.distributions as dist

        seqs, _ = self._coerce(data, fitting=self.obs_dim is None)
        y, mask = seqs.values3d(), seqs.mask
        scale = float(prior_scale) if prior_scale is not None else _diff_variance(seqs)
        if not scale > 0:
            raise ValueError(f"prior_scale must be positive, got {prior_scale!r}")
        if self.structure is not None:
            names = self._free_names()
            if not names:
                raise ValueError("this structured model has no free variance to infer")
            prior_mean, prior_var = self._data_prior(seqs)
        else:
            self._check_fitted()
            names = []
        S, D = self.state_dim, self.obs_dim

        def model() -> None:
            half_cauchy = dist.HalfCauchy(torch.tensor(scale, dtype=torch.float64))
            if self.structure is not None:
                free = torch.stack([pyro.sample(n, half_cauchy) for n in names]).double()
                params = self._structured_params(free, prior_mean, prior_var)
            else:
                q = pyro.sample("transition_var", half_cauchy.expand([S]).to_event(1))
                r = pyro.sample("observation_var", half_cauchy.expand([D]).to_event(1))
                params = dict(self._params, transition_cov=torch.diag(q.double()),
                              observation_cov=torch.diag(r.double()))
            res = inference.kalman_filter(y, *(params[k] for k in PARAM_NAMES))
            pyro.factor("log_lik", torch.where(mask, res.log_prob_steps, 0.0).sum())

        return model


# ---------------------------------------------------------------------- helpers
def _smoothed(seqs: Sequences, params: dict[str, torch.Tensor]):
    """Smoothed means ``[N, T, S]``, covariances ``[N, T, S, S]``, lag-one cross-covariances
    ``[N, T - 1, S, S]`` (padding repeats the last step, cross-covariances are 0 there) and
    the log-likelihood ``[N]``. The backward pass runs once per distinct length."""
    y = seqs.values3d()
    res = inference.kalman_filter(y, *(params[k] for k in PARAM_NAMES))
    A = params["transition_matrix"]
    N, T, S = res.filt_mean.shape
    mean = torch.empty(N, T, S, dtype=torch.float64)
    cov = torch.empty(N, T, S, S, dtype=torch.float64)
    cross = torch.zeros(N, max(T - 1, 0), S, S, dtype=torch.float64)
    for length in torch.unique(seqs.lengths).tolist():
        rows = torch.nonzero(seqs.lengths == length)[:, 0]
        m, P, X = inference.rts_smoother(
            res.filt_mean[rows, :length], res.pred_mean[rows, :length], res.covs, A
        )
        mean[rows, :length] = m
        mean[rows, length:] = m[:, -1:]
        cov[rows, :length] = P
        cov[rows, length:] = P[-1]
        cross[rows, : length - 1] = X
    log_lik = torch.where(seqs.mask, res.log_prob_steps, 0.0).sum(-1)
    return mean, cov, cross, log_lik


def _carry_index(seqs: Sequences) -> torch.Tensor:
    """``[N, T_max]`` time index that repeats each sequence's last step over its padding."""
    t = torch.arange(seqs.max_length)
    return torch.minimum(t[None, :], (seqs.lengths - 1)[:, None])


def _diff_variance(seqs: Sequences) -> float:
    """A scale for noise variances: the mean variance of the first differences (or values)."""
    y = seqs.values3d()
    if seqs.max_length > 1:
        both = seqs.mask[:, 1:] & seqs.mask[:, :-1]
        if int(both.sum()) > 1:
            v = float((y[:, 1:] - y[:, :-1])[both].var(0).mean())
            if v > 0:
                return v
    v = float(y[seqs.mask].var(0).mean()) if seqs.num_steps > 1 else 0.0
    return v if v > 0 else 1.0


def _psd_sqrt(M: torch.Tensor) -> torch.Tensor:
    """A square root ``B`` with ``B B' = M`` for a positive semi-definite M."""
    chol, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        return chol
    vals, vecs = torch.linalg.eigh(M)
    return vecs * vals.clamp(min=0).sqrt()


def _check_structure(structure: Any, S: int, D: int | None) -> dict[str, Any] | None:
    if structure is None:
        return None
    if not isinstance(structure, dict):
        raise ValueError("structure must be a dict (see LinearGaussianSSM.local_level)")
    keys = {"transition_matrix", "observation_matrix", "transition_vars", "observation_vars",
            "initial_mean", "initial_var"}
    if set(structure) != keys:
        raise ValueError(f"structure needs exactly the keys {sorted(keys)}")
    A = np.asarray(structure["transition_matrix"], dtype=float)
    C = np.asarray(structure["observation_matrix"], dtype=float)
    if A.shape != (S, S) or C.ndim != 2 or C.shape[1] != S or (D is not None and C.shape[0] != D):
        raise ValueError(
            f"structure matrices have shapes {A.shape} and {C.shape}; expected ({S}, {S}) and "
            f"({D if D is not None else 'D'}, {S})"
        )
    tv, ov = structure["transition_vars"], structure["observation_vars"]
    if len(tv) != S or len(ov) != C.shape[0]:
        raise ValueError("structure needs one transition variance per state and one "
                         "observation variance per observed dimension")
    for name, value in list(tv) + list(ov):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    for name, value in ov:
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive (the observation noise), got {value!r}")
    mean, var = structure["initial_mean"], structure["initial_var"]
    if mean is not None and (len(mean) != S or not all(math.isfinite(m) for m in mean)):
        raise ValueError(f"initial_mean must hold {S} finite numbers, got {mean!r}")
    if var is not None and not (math.isfinite(var) and var >= 0):
        raise ValueError(f"initial_var must be a finite non-negative number, got {var!r}")
    return {
        "transition_matrix": A.tolist(),
        "observation_matrix": C.tolist(),
        "transition_vars": [[str(n), None if v is None else float(v)] for n, v in tv],
        "observation_vars": [[str(n), None if v is None else float(v)] for n, v in ov],
        "initial_mean": None if mean is None else [float(m) for m in mean],
        "initial_var": None if var is None else float(var),
    }


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    try:
        if isinstance(x, torch.Tensor):
            t = x.detach().to("cpu", torch.float64).clone()
        else:
            t = torch.as_tensor(np.array(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be read as an array of numbers: {err}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_params(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Validate and copy LGSSM parameters (float64); raise ValueError naming the problem."""
    p = {k: _as_tensor(raw[k], k) for k in PARAM_NAMES}
    for k in ("initial_cov", "transition_matrix", "transition_cov", "observation_matrix",
              "observation_cov"):
        if p[k].ndim == 0:
            p[k] = p[k].reshape(1, 1)
    if p["initial_mean"].ndim == 0:
        p["initial_mean"] = p["initial_mean"].reshape(1)
    C = p["observation_matrix"]
    if C.ndim != 2:
        raise ValueError(f"observation_matrix must be [D, S], got shape {tuple(C.shape)}")
    D, S = C.shape
    expected = {
        "initial_mean": (S,), "initial_cov": (S, S), "transition_matrix": (S, S),
        "transition_cov": (S, S), "observation_cov": (D, D),
    }
    for k, shape in expected.items():
        if tuple(p[k].shape) != shape:
            raise ValueError(
                f"{k} has shape {tuple(p[k].shape)}, expected {shape} "
                f"(S={S}, D={D} from observation_matrix)"
            )
    for k in ("initial_cov", "transition_cov", "observation_cov"):
        M = p[k]
        scale = max(1.0, float(M.abs().max()))
        if float((M - M.T).abs().max()) > _SYM_TOL * scale:
            raise ValueError(f"{k} is not symmetric")
        M = 0.5 * (M + M.T)
        p[k] = M
        if k == "observation_cov":
            if int(torch.linalg.cholesky_ex(M)[1]) != 0:
                raise ValueError(f"{k} is not positive definite")
        elif float(torch.linalg.eigvalsh(M).min()) < -1e-12 * scale:
            raise ValueError(f"{k} is not positive semi-definite")
    return p


def _unstructured_parametrisation(seqs: Sequences, S: int, D: int):
    """Unconstrained parameters for a full LGSSM and a data-driven start.

    ``theta`` holds A, C, mu0 freely and the covariances as Cholesky factors with log
    diagonals. Returns ``(unpack, theta0, pack)``.
    """
    y = seqs.values3d()
    obs = y[seqs.mask]  # [sum T, D]
    cov = torch.atleast_2d(torch.cov(obs.T)) if obs.shape[0] > 1 else torch.eye(D)
    cov = cov + 1e-6 * float(torch.diagonal(cov).mean().clamp(min=1e-12)) * torch.eye(D)
    vals, vecs = torch.linalg.eigh(cov)
    order = torch.argsort(vals, descending=True)
    C0 = torch.randn(D, S, dtype=torch.float64) * 0.1 * vals.mean().sqrt()
    k = min(S, D)
    C0[:, :k] += vecs[:, order[:k]] * (0.5 * vals[order[:k]]).sqrt()
    A0 = 0.9 * torch.eye(S, dtype=torch.float64) + 0.01 * torch.randn(S, S, dtype=torch.float64)
    Q0 = 0.19 * torch.eye(S, dtype=torch.float64)
    R0 = 0.5 * torch.diag(torch.diagonal(cov))
    P0 = torch.eye(S, dtype=torch.float64)
    mu0 = torch.linalg.pinv(C0) @ y[:, 0].mean(0)
    tril_s = torch.tril_indices(S, S)
    tril_d = torch.tril_indices(D, D)
    sizes = [S * S, D * S, S, len(tril_s[0]), len(tril_d[0]), len(tril_s[0])]

    def to_chol(M: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        L = torch.linalg.cholesky(M).clone()
        L[range(M.shape[0]), range(M.shape[0])] = torch.log(torch.diagonal(L))
        return L[idx[0], idx[1]]

    def from_chol(v: torch.Tensor, n: int, idx: torch.Tensor) -> torch.Tensor:
        L = torch.zeros(n, n, dtype=torch.float64).index_put((idx[0], idx[1]), v)
        diag = torch.diagonal(L)
        L = L - torch.diag(diag) + torch.diag(torch.exp(diag))
        return L @ L.T

    def pack(p: dict[str, torch.Tensor]) -> np.ndarray:
        return torch.cat([
            p["transition_matrix"].reshape(-1), p["observation_matrix"].reshape(-1),
            p["initial_mean"], to_chol(p["transition_cov"], tril_s),
            to_chol(p["observation_cov"], tril_d), to_chol(p["initial_cov"], tril_s),
        ]).numpy()

    theta0 = pack({"transition_matrix": A0, "observation_matrix": C0, "initial_mean": mu0,
                   "transition_cov": Q0, "observation_cov": R0, "initial_cov": P0})

    def unpack(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        a, c, m, q, r, p0 = torch.split(theta, sizes)
        return {
            "initial_mean": m,
            "initial_cov": from_chol(p0, S, tril_s),
            "transition_matrix": a.reshape(S, S),
            "transition_cov": from_chol(q, S, tril_s),
            "observation_matrix": c.reshape(D, S),
            "observation_cov": from_chol(r, D, tril_d),
        }

    return unpack, theta0, pack
