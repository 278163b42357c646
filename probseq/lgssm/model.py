"""The linear-Gaussian state-space model (Kalman filter likelihood)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probseq._utils import progress_bar
from probseq.base import SequenceModel
from probseq.data import Sequences, check_sequences
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
_LOG_2PI = math.log(2.0 * math.pi)
#: values per block of rows in log_prob_steps (keeps the per-step temporaries in cache).
_BLOCK = 1 << 18


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

    Build one with :meth:`from_params`, :meth:`local_level`, :meth:`local_linear_trend`,
    :meth:`structural` (trend, seasonal, cycle and AR components; :meth:`decompose`), or
    ``LinearGaussianSSM(state_dim=S).fit(data)`` (maximum likelihood over every parameter,
    L-BFGS on an unconstrained parametrisation).

    Initialisation: ``"proper"`` scores every step with ``z_0 ~ N(initial_mean,
    initial_cov)``, so ``log_prob`` is the density of all T observations. ``"diffuse"``
    (D = 1; the default of :meth:`local_level` and :meth:`local_linear_trend`) is Durbin &
    Koopman's exact diffuse initialisation: the first ``num_diffuse_steps`` observations only
    locate the state and are not scored (``log_prob_steps`` 0 there), and ``log_prob`` is the
    exact conditional density of the rest given them, which is statsmodels' diffuse
    log-likelihood without its ``-log(2 pi F_inf) / 2`` terms (they depend on the arbitrary
    scale of the diffuse prior). ``compare`` conditions every model on those steps.

    Missing values (NaN) are marginalised exactly: a step with nothing observed skips the
    update, a partially observed step updates on its observed coordinates. Covariates
    (``exog=``) add a regression term ``exog_coef @ u_t`` to the observation equation.

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
        initialization: ``"proper"`` (default) or ``"diffuse"`` (exact diffuse, D = 1 only).
    """

    data_kind = "continuous"
    #: structured models list their free variances (see ``_summary_parameters``)
    summary_params = ()
    supports_missing = True
    supports_exog = True

    def __init__(
        self,
        state_dim: int = 1,
        obs_dim: int | None = None,
        structure: dict[str, Any] | None = None,
        initialization: str = "proper",
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
        if initialization not in ("proper", "diffuse"):
            raise ValueError(
                f"initialization must be 'proper' or 'diffuse', got {initialization!r}")
        if initialization == "diffuse" and self.obs_dim not in (None, 1):
            raise ValueError("exact diffuse initialization is implemented for obs_dim = 1 only")
        self.initialization = initialization
        self._obs_dim = self.obs_dim if self.obs_dim is not None else "any"
        self._params: dict[str, torch.Tensor] | None = None
        self._fit_exog: torch.Tensor | None = None
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
        *,
        initialization: str = "proper",
        exog_coef: Any = None,
    ) -> LinearGaussianSSM:
        """A fitted model from explicit parameters (see the class docstring for shapes).

        ``initialization="diffuse"`` (D = 1 only) scores with an exact diffuse initial state
        instead of ``N(initial_mean, initial_cov)``; see the class docstring. ``exog_coef``
        ``[D, E]`` adds the regression term ``exog_coef @ u_t`` on covariates ``u_t`` to the
        observation equation (the model then needs ``exog=`` wherever it takes data).

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
                exog_coef=exog_coef,
            )
        )
        S, D = params["observation_matrix"].shape[1], params["observation_matrix"].shape[0]
        model = cls(state_dim=S, obs_dim=D, initialization=initialization)
        model._params = params
        model.num_diffuse_steps  # noqa: B018 (refuses a diffuse state the data cannot identify)
        return model

    @classmethod
    def local_level(
        cls,
        level_var: float | None = None,
        obs_var: float | None = None,
        *,
        initial_mean: float | None = None,
        initial_var: float | None = None,
        initialization: str | None = None,
    ) -> LinearGaussianSSM:
        """The local level model (random walk plus noise), S = D = 1.

        ``level_t = level_(t-1) + N(0, level_var)``, ``x_t = level_t + N(0, obs_var)``.

        With both variances given the model is ready to use. A variance left as None is
        estimated by ``fit`` (the others stay fixed), as in statsmodels'
        ``UnobservedComponents``.

        Initialisation (``initialization``):

        * ``"diffuse"`` (the default when no ``initial_mean``/``initial_var`` is given): the
          exact diffuse initial state of Durbin & Koopman, as statsmodels'
          ``UnobservedComponents(..., use_exact_diffuse=True)``. The first observation only
          locates the level (``num_diffuse_steps = 1``); ``log_prob`` is the exact conditional
          density ``log p(x_1..x_(T-1) | x_0)`` (statsmodels' diffuse log-likelihood without
          the first step's ``-log(2 pi F_inf) / 2``, which depends on the arbitrary scale of
          the diffuse prior), ``log_prob_steps`` is 0 at the diffuse step, and ``fit``
          maximises it (Durbin & Koopman's estimates on the Nile: 15099, 1469.1).
        * ``"proper"`` (the default when ``initial_mean`` or ``initial_var`` is given): the
          level starts from ``N(initial_mean, initial_var)`` and ``log_prob`` is the density of
          all T observations. ``initial_mean=None`` / ``initial_var=None`` then choose a
          nearly diffuse prior: at ``fit`` time the mean of the sequences' first observations
          and ``1e6`` times the data's variance; for a model built with both variances given,
          ``0`` and ``1e6 * max(level_var, obs_var)``. Its first step then costs a number of
          nats that depends on that factor.

        Either way the stored ``initial_mean``/``initial_cov`` (the nearly diffuse prior when
        not given) are what ``sample`` without a prefix starts from.
        """
        return cls._structured(
            [[1.0]], [[1.0]], [["level_var", level_var]], [["obs_var", obs_var]],
            initial_mean, initial_var, initialization,
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
        initialization: str | None = None,
    ) -> LinearGaussianSSM:
        """The local linear trend model, S = 2 (level, slope), D = 1.

        ``level_t = level_(t-1) + slope_(t-1) + N(0, level_var)``,
        ``slope_t = slope_(t-1) + N(0, slope_var)``, ``x_t = level_t + N(0, obs_var)``.
        ``slope_var=0`` gives the smooth-trend model. Unknown variances, the prior and
        ``initialization`` work as in :meth:`local_level`; under the default exact diffuse
        initialisation the first two observations locate the level and slope
        (``num_diffuse_steps = 2``) and ``log_prob`` is ``log p(x_2..x_(T-1) | x_0, x_1)``.
        The nearly diffuse proper prior's mean defaults to ``[first value, 0]``.
        """
        return cls._structured(
            [[1.0, 1.0], [0.0, 1.0]], [[1.0, 0.0]],
            [["level_var", level_var], ["slope_var", slope_var]], [["obs_var", obs_var]],
            initial_mean, initial_var, initialization,
        )

    @classmethod
    def structural(
        cls,
        *,
        level: bool = True,
        trend: bool = False,
        seasonal: int | None = None,
        freq_seasonal: Any = None,
        cycle: bool = False,
        autoregressive: int | None = None,
        irregular: bool = True,
        stochastic_level: bool = True,
        stochastic_trend: bool = True,
        stochastic_seasonal: bool = True,
        stochastic_freq_seasonal: Any = None,
        stochastic_cycle: bool = True,
        cycle_period: float | None = None,
        cycle_damping: float | None = 1.0,
        ar_coef: Any = None,
        obs_var: float | None = None,
        level_var: float | None = None,
        slope_var: float | None = None,
        seasonal_var: float | None = None,
        freq_seasonal_var: Any = None,
        cycle_var: float | None = None,
        ar_var: float | None = None,
    ) -> LinearGaussianSSM:
        """A structural time-series model: statsmodels' ``UnobservedComponents``, D = 1.

        ``x_t = level_t + seasonal_t + sum_k freq_seasonal_k,t + cycle_t + ar_t + N(0,
        obs_var)``, each component a linear-Gaussian state process (equations in
        :mod:`probseq.lgssm.structural`). The states are ordered as statsmodels orders them.

        Components:

        * ``level`` (default True) and ``trend`` (a slope): the local level, or with
          ``trend=True`` the local linear trend; ``stochastic_level=False`` /
          ``stochastic_trend=False`` fix their variance at 0 (``trend=True`` with both False:
          a deterministic linear trend; ``stochastic_level=False`` alone: the smooth trend).
        * ``seasonal=s``: the dummy seasonal of integer period s (s - 1 states, the seasonal
          effects sum to noise over any s consecutive steps).
        * ``freq_seasonal=[{"period": p, "harmonics": h}, ...]``: trigonometric seasonals;
          periods need not be integers (weekly data: 365.25 / 7); h < p / 2 harmonics each
          (default the most allowed), 2 h states sharing one variance.
        * ``cycle=True``: a stochastic cycle of period ``cycle_period`` (steps, required:
          the period is not estimated) and damping ``cycle_damping`` rho in (0, 1] (default
          1, undamped as statsmodels' default; None: estimated in (0, 1), statsmodels'
          ``damped_cycle=True``).
        * ``autoregressive=p``: an AR(p) component with coefficients ``ar_coef`` (lag 1
          first; None, the default: estimated, constrained stationary), which starts from its
          stationary distribution.

        Variances (``obs_var``, ``level_var``, ``slope_var``, ``seasonal_var``,
        ``freq_seasonal_var`` (one number, or a list: one per trigonometric seasonal),
        ``cycle_var``, ``ar_var``): None (default) is estimated by ``fit``, a number is
        fixed; a deterministic component's variance is 0.

        Initialisation: exact diffuse, as ``UnobservedComponents(..., use_exact_diffuse=True)``:
        every state but the AR states is diffuse, ``num_diffuse_steps`` is the number of
        diffuse states (13 for a trend with ``seasonal=12``), those steps are not scored and
        ``log_prob_steps`` after them equals statsmodels' ``loglikeobs``, gaps included.
        :meth:`decompose` gives each component's smoothed mean and variance.

        Raises:
            ValueError: an unsupported combination (``irregular=False``, a Nyquist
                harmonic, components the exact diffuse filter cannot locate), or a bad value,
                named.
        """
        from probseq.lgssm import structural

        st = structural.build(
            level=level, trend=trend, seasonal=seasonal, freq_seasonal=freq_seasonal,
            cycle=cycle, autoregressive=autoregressive, irregular=irregular,
            stochastic_level=stochastic_level, stochastic_trend=stochastic_trend,
            stochastic_seasonal=stochastic_seasonal,
            stochastic_freq_seasonal=stochastic_freq_seasonal, stochastic_cycle=stochastic_cycle,
            cycle_period=cycle_period, cycle_damping=cycle_damping, ar_coef=ar_coef,
            obs_var=obs_var, level_var=level_var, slope_var=slope_var,
            seasonal_var=seasonal_var, freq_seasonal_var=freq_seasonal_var,
            cycle_var=cycle_var, ar_var=ar_var)
        model = cls._structured(
            st.transition_matrix, st.observation_matrix, st.transition_vars,
            st.observation_vars, [0.0] * len(st.diffuse), None,
            "diffuse" if any(st.diffuse) else "proper",
            diffuse=st.diffuse, components=st.components, dynamics=st.dynamics)
        k = sum(st.diffuse)
        try:
            steps = model.num_diffuse_steps
        except ValueError:  # never located within inference's step limit
            steps = None
        if k and steps != k:
            # each observation locates one diffuse direction; more steps means rounding
            # left a diffuse residue (nearly collinear components: a long-period seasonal with
            # several harmonics beside a trend), and the filter's results would be unreliable
            raise ValueError(
                f"the exact diffuse filter cannot locate these {k} diffuse states in floating "
                f"point (it needs {steps or 'more than 1000'} steps): the components are nearly "
                "collinear over the first steps (statsmodels' filter never leaves its diffuse "
                "period here either); use fewer harmonics or a shorter period")
        return model

    @classmethod
    def _structured(cls, A, C, tvars, ovars, initial_mean, initial_var,
                    initialization, diffuse=None, components=None,
                    dynamics=None) -> LinearGaussianSSM:
        if initialization is None:
            given = initial_mean is not None or initial_var is not None
            initialization = "proper" if given else "diffuse"
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
        if diffuse is not None:
            structure["diffuse"] = [bool(d) for d in diffuse]
        if components is not None:
            structure["components"] = components
        if dynamics is not None:
            structure["dynamics"] = dynamics
        model = cls(state_dim=len(A), obs_dim=len(C), structure=structure,
                    initialization=initialization)
        if not model._free_names() and not model._num_free_dynamics():
            variances = [v for _, v in list(tvars) + list(ovars)]
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
        """The parameters as a dict of tensors (copies), named as in the class docstring."""
        self._check_fitted()
        return {k: v.clone() for k, v in self._params.items()}

    @property
    def num_exog(self) -> int:
        """E, the number of covariates the fitted model uses (0 without covariates)."""
        return 0 if self._params is None or "exog_coef" not in self._params else int(
            self._params["exog_coef"].shape[-1])

    @property
    def num_params(self) -> int:
        extra = 0
        if self._params is not None and "exog_coef" in self._params:
            extra = self._params["exog_coef"].numel()
        if self.structure is not None:
            return len(self._free_names()) + self._num_free_dynamics() + extra
        S, D = self.state_dim, self._dim
        return S * S + D * S + S * (S + 1) + D * (D + 1) // 2 + S + extra

    def _is_fitted(self) -> bool:
        return self._params is not None

    @property
    def _dim(self) -> int:
        """D of the fitted parameters (or of the constructor)."""
        if self._params is not None:
            return int(self._params["observation_matrix"].shape[0])
        if self.obs_dim is None:
            self._check_fitted()
        return self.obs_dim

    def get_config(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "obs_dim": self.obs_dim, "structure": self.structure,
                "initialization": self.initialization}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._params)

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        params = _check_params({k: tensors[k] for k in (*PARAM_NAMES, "exog_coef")
                                if k in tensors})
        D, S = params["observation_matrix"].shape
        if S != self.state_dim or (self.obs_dim is not None and D != self.obs_dim):
            raise ValueError("saved parameters do not match the saved configuration")
        self._params = params
        self._obs_dim = D

    @property
    def num_diffuse_steps(self) -> int:
        """d: the initial steps that only locate the diffuse state and are not scored.

        0 under a proper prior; under exact diffuse initialisation the steps until the
        observations identify the state (local level 1, local linear trend 2). ``compare``
        conditions every model it scores on the first d steps.
        """
        if self.initialization == "proper":
            return 0
        A, C, P_inf = self._diffuse_structure()
        return inference.diffuse_num_steps(A, C, initial_cov_inf=P_inf)

    def _diffuse_structure(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(A, C, P_inf)``: what decides how many observations locate the diffuse state
        (``P_inf`` None: every state diffuse)."""
        if self.structure is not None:
            A = torch.tensor(self.structure["transition_matrix"], dtype=torch.float64)
            C = torch.tensor(self.structure["observation_matrix"], dtype=torch.float64)
        else:
            self._check_fitted()
            A, C = self._params["transition_matrix"], self._params["observation_matrix"]
        flags = (self.structure or {}).get("diffuse")
        P_inf = None if flags is None else torch.diag(torch.tensor(flags, dtype=torch.float64))
        return A, C, P_inf

    def diffuse_steps(self, data: Any) -> torch.Tensor:
        """The initial steps of each sequence that only locate the diffuse state.

        ``num_diffuse_steps`` counts them for a fully observed sequence; gaps before the
        state is located lengthen them (the local level with ``x_0`` missing needs steps 0
        and 1). ``compare`` and ``backtest`` condition each sequence on these steps. At most
        each sequence's length (then nothing of it can be scored); 0 under a proper prior.

        Returns:
            ``[N]`` int64 (a 0-d tensor for one sequence).
        """
        seqs, single = self._coerce(data)
        out = torch.zeros(len(seqs), dtype=torch.int64)
        if self.initialization == "diffuse":
            A, C, P_inf = self._diffuse_structure()
            d = self.num_diffuse_steps
            for rows, pattern in _patterns(seqs):
                if pattern is None:
                    out[rows] = d
                else:
                    out[rows] = inference.diffuse_num_steps(
                        A, C, observed=pattern.reshape(pattern.shape[0], -1).all(-1).tolist(),
                        initial_cov_inf=P_inf)
            out = torch.minimum(out, seqs.lengths)
        return out[0] if single else out

    def _filter(self, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
                observed: torch.Tensor | None = None) -> inference.FilterResult:
        """The Kalman filter of ``y [N, T, D]`` (sharing the observation pattern
        ``observed``, None: no gaps) under this model's initialisation."""
        m0, P0, A, Q, C, R = self._matrices(params)
        if self.initialization == "diffuse":
            return inference.diffuse_kalman_filter(y, A, Q, C, R, observed=observed,
                                                   **self._diffuse_start(P0))
        return inference.kalman_filter(y, m0, P0, A, Q, C, R, observed=observed)

    def _residual(self, seqs: Sequences, exog: torch.Tensor | None,
                  params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[N, T_max, D]`` the data minus the regression term ``exog_coef @ u_t`` (the data
        themselves for a model without covariates); differentiable in ``exog_coef``."""
        p = self._params if params is None else params
        y = seqs.values3d()
        B = p.get("exog_coef")
        if B is None and exog is None:
            return y
        if B is None:
            raise ValueError(f"this {self.name} was fitted without covariates; fit it with "
                             "exog= to use them")
        if exog is None:
            raise ValueError(f"this {self.name} has a regression on {B.shape[1]} covariate(s); "
                             "pass exog=")
        if exog.shape[-1] != B.shape[1]:
            raise ValueError(f"exog has {exog.shape[-1]} covariate(s), the model was fitted "
                             f"with {B.shape[1]}")
        return y - exog[:, : y.shape[1]] @ B.T

    def _filter_groups(self, seqs: Sequences, params: dict[str, torch.Tensor] | None = None,
                       exog: torch.Tensor | None = None,
                       ) -> list[tuple[torch.Tensor, Sequences, inference.FilterResult]]:
        """The filter over groups of sequences that share an observation pattern: the
        covariance recursion depends on where the gaps are. ``(rows, sub-batch, result)``."""
        y = self._residual(seqs, exog, params)
        out = []
        for rows, pattern in _patterns(seqs):
            sub = _full_width(seqs, rows) if len(rows) != len(seqs) else seqs
            yr = y[rows] if len(rows) != len(seqs) else y
            out.append((rows, sub, self._filter(yr, params, pattern)))
        return out

    def _total_log_lik(self, seqs: Sequences, params: dict[str, torch.Tensor] | None = None,
                       exog: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of ``log_prob`` over the batch (differentiable in ``params``)."""
        total = torch.zeros((), dtype=torch.float64)
        for _, sub, res in self._filter_groups(seqs, params, exog):
            total = total + torch.where(sub.mask, res.log_prob_steps, 0.0).sum()
        return total

    def _matrices(self, params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        p = self._params if params is None else params
        return tuple(p[k] for k in PARAM_NAMES)

    def _log_prob(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        if self._scalar_fast_path(seqs):
            return self._scalar_log_prob(seqs, exog, steps=False)[0]
        return self._log_prob_steps(seqs, exog).sum(-1)

    def _log_prob_steps(self, seqs: Sequences, exog: torch.Tensor | None = None) -> torch.Tensor:
        if self._scalar_fast_path(seqs):
            return self._scalar_log_prob(seqs, exog)[1]
        N, T = seqs.mask.shape
        rows_per_block = max(1, _BLOCK // max(T, 1))
        if N > rows_per_block:
            # blocks of rows whose [rows, T] temporaries stay in cache: the time per value
            # then stays flat as N and T grow (the shared covariance recursion is cheap
            # to repeat per block)
            out = torch.zeros(N, T, dtype=torch.float64)
            for start in range(0, N, rows_per_block):
                idx = torch.arange(start, min(start + rows_per_block, N))
                sub = seqs[idx]
                ex = None if exog is None else exog[idx, : sub.max_length]
                out[idx, : sub.max_length] = self._log_prob_steps_block(sub, ex)
            return out
        return self._log_prob_steps_block(seqs, exog)

    def _scalar_fast_path(self, seqs: Sequences) -> bool:
        """Whether :meth:`_scalar_log_prob_steps` applies: one state observed by one value
        under a proper prior, no gaps, no gradients."""
        return (self.state_dim == 1 and seqs.dim in (None, 1) and not seqs.has_missing
                and self.initialization != "diffuse" and not torch.is_grad_enabled()
                and seqs.values.device.type == "cpu")

    def _scalar_log_prob(self, seqs: Sequences, exog: torch.Tensor | None = None,
                         steps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log_prob [N], log_prob_steps [N, T_max] or None)`` of a scalar model by the
        compiled loop of :mod:`probseq.lgssm.compiled` (the covariance recursion once, then
        one pass per sequence over its mean); equal to
        :func:`probseq.lgssm.inference.kalman_filter`'s to rounding."""
        from probseq.lgssm import compiled

        m0, P0, A, Q, C, R = self._matrices()
        # The covariance recursion depends on the parameters' values and the length only:
        # kept for the next call with the same ones (its Python loop is most of the fixed
        # cost of a call).
        key = (*(float(x.reshape(-1)[0]) for x in (P0, A, Q, C, R)), seqs.max_length)
        cached = self.__dict__.get("_scalar_covs")
        if cached is None or cached[0] != key:
            covs = inference.riccati(P0, A, Q, C, R, seqs.max_length)
            cached = (key, covs.gain[:, 0, 0].numpy().copy(),
                      covs.innov_cov[:, 0, 0].numpy().copy())
            self._scalar_covs = cached
        y = self._residual(seqs, exog)[..., 0]
        total, out = compiled.scalar_log_prob(
            y.numpy(), seqs.lengths.numpy(), float(m0[0]), float(A[0, 0]), float(C[0, 0]),
            cached[1], cached[2], steps=steps)
        return torch.from_numpy(total), (None if out is None else torch.from_numpy(out))

    def _log_prob_steps_block(self, seqs: Sequences,
                              exog: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.zeros(seqs.mask.shape, dtype=torch.float64)
        for rows, _, res in self._filter_groups(seqs, exog=exog):
            out[rows] = res.log_prob_steps
        return torch.where(seqs.mask, out, torch.zeros((), dtype=torch.float64))

    # ------------------------------------------------------------------ posterior
    @torch.no_grad()
    def filter(self, data: Any, *, exog: Any = None) -> StatePosterior:
        """Filtered state marginals ``p(z_t | x_0..x_t)``.

        Under exact diffuse initialisation a direction of the state that the observations up
        to step t do not locate yet (the slope of the local linear trend after one
        observation) has an infinite variance. Missing values are skipped (the filter
        predicts through them); ``exog`` are the covariates of a model fitted with them.

        Returns:
            A :class:`StatePosterior` with ``mean [N, T_max, S]`` and ``cov [N, T_max, S, S]``
            (``[T, S]``, ``[T, S, S]`` for one sequence).
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        ex = self._coerce_exog(exog, seqs, data)
        S, T = self.state_dim, seqs.max_length
        mean = torch.empty(len(seqs), T, S, dtype=torch.float64)
        cov = torch.empty(len(seqs), T, S, S, dtype=torch.float64)
        for rows, sub, res in self._filter_groups(seqs, exog=ex):
            t_idx = _carry_index(sub)  # [n, T]
            mean[rows] = torch.gather(res.filt_mean, 1,
                                      t_idx.unsqueeze(-1).expand_as(res.filt_mean))
            table = res.covs.filt_cov
            d = res.covs.num_diffuse
            if d:  # directions still diffuse after step t have infinite variance
                table = table.clone()
                diag = torch.diagonal(table[:d], dim1=-2, dim2=-1)
                diffuse = (torch.diagonal(res.covs.filt_cov_inf, dim1=-2, dim2=-1)
                           > inference.DIFFUSE_TOL)
                diag[diffuse] = math.inf
            cov[rows] = table[res.covs.index(T)[t_idx]]
        return StatePosterior(mean[0], cov[0]) if single else StatePosterior(mean, cov)

    @torch.no_grad()
    def smoother(self, data: Any, *, exog: Any = None) -> StatePosterior:
        """Smoothed state marginals ``p(z_t | x_0..x_(T-1))`` (Rauch-Tung-Striebel).

        Under exact diffuse initialisation the steps of the diffuse period (gaps before the
        state is located included, and a diffuse period that reaches the last step) are
        smoothed by the exact initial state smoother (Durbin & Koopman 2012, section 5.3;
        :func:`probseq.lgssm.inference.diffuse_smoother`): no kappa is chosen, so the result
        does not depend on the data's scale. Tested against a 40-digit brute-force posterior
        (means within 1e-9 smoothed standard deviations, covariances within 1e-9 of the
        largest variance, after 20 leading gaps and with two observations only) and, in a
        fuzz suite, against statsmodels.

        Returns:
            A :class:`StatePosterior` shaped as in :meth:`filter`.

        Raises:
            ValueError: a sequence never locates the diffuse state (too few observed
                values): its smoothed state has an infinite variance.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        ex = self._coerce_exog(exog, seqs, data)
        mean, cov, _, _ = self._smoothed(seqs, self._params, ex, cross=False)
        return StatePosterior(mean[0], cov[0]) if single else StatePosterior(mean, cov)

    @torch.no_grad()
    def decompose(self, data: Any, *, exog: Any = None):
        """The smoothed components of a structural model (:meth:`structural`).

        Each component ``c_t = w @ z_t`` (``level``, ``slope``, ``seasonal``,
        ``freq_seasonal``, ``cycle``, ``autoregressive``, whichever the model has) gets its
        smoothed mean ``E[c_t | x]`` and variance ``Var[c_t | x]`` (from :meth:`smoother`,
        so missing values are smoothed through); a model with covariates adds
        ``regression`` (``exog_coef @ u_t``, variance 0). These equal statsmodels'
        ``UnobservedComponents`` results' ``level["smoothed"]``, ``trend``, ``seasonal``,
        ... and their ``smoothed_cov``.

        Returns:
            A :class:`probseq.lgssm.structural.Decomposition`: ``mean`` and ``var`` dicts of
            ``[N, T_max]`` tensors (``[T]`` for one sequence, pandas Series on the input's
            index for a pandas Series); ``to_frame()`` for one sequence.

        Raises:
            ValueError: the model is not a structural model.
        """
        import pandas as pd

        from probseq.lgssm.structural import Decomposition

        comps = (self.structure or {}).get("components")
        if not comps:
            raise ValueError(f"decompose needs a structural model (LinearGaussianSSM."
                             f"structural); this {self.name} has no named components")
        # the tensors of the posterior (pandas input gives DataFrames out of smoother)
        post = self.smoother(data.to_numpy() if isinstance(data, pd.Series) else data,
                             exog=exog)
        W = torch.tensor([w for _, w in comps], dtype=torch.float64)  # [K, S]
        mean = post.mean @ W.T  # [..., T, K]
        var = torch.einsum("ks,...sr,kr->...k", W, post.cov, W)
        out_m = {name: mean[..., k] for k, (name, _) in enumerate(comps)}
        out_v = {name: var[..., k] for k, (name, _) in enumerate(comps)}
        if exog is not None and "exog_coef" in self._params:
            seqs, single = self._coerce(data)
            ex = self._coerce_exog(exog, seqs, data)[:, : seqs.max_length]
            reg = (ex @ self._params["exog_coef"].T)[..., 0]
            out_m["regression"] = reg[0] if single else reg
            out_v["regression"] = torch.zeros_like(out_m["regression"])
        if isinstance(data, pd.Series):
            out_m = {k: pd.Series(v.numpy(), index=data.index, name=k) for k, v in out_m.items()}
            out_v = {k: pd.Series(v.numpy(), index=data.index, name=k) for k, v in out_v.items()}
        return Decomposition(out_m, out_v)

    def _forecast_moments(self, seqs: Sequences, horizon: int,
                          exog: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact predictive moments ``[N, H, D]``, ``[N, H, D, D]`` after each sequence
        (``exog`` ``[N, T_max + H, E]`` when the model has covariates)."""
        m0, P0, A, Q, C, R = self._matrices()
        S = self.state_dim
        mean = torch.empty(len(seqs), S, dtype=torch.float64)
        cov = torch.empty(len(seqs), S, S, dtype=torch.float64)
        for rows, sub, res in self._filter_groups(seqs, exog=exog):
            mean[rows], cov[rows] = _last_state(
                res, sub.lengths, sub.step_any_observed if sub.has_missing else None, rows,
                self.num_diffuse_steps)
        obs_mean, obs_cov = inference.forecast_moments(mean, cov, A, Q, C, R, horizon)
        if exog is not None:  # the regression term at the future steps of each sequence
            t = seqs.lengths[:, None] + torch.arange(horizon)[None, :]  # [N, H]
            future = torch.gather(exog, 1, t.unsqueeze(-1).expand(-1, -1, exog.shape[-1]))
            obs_mean = obs_mean + future @ self._params["exog_coef"].T
        return obs_mean, obs_cov

    # ------------------------------------------------------------------ sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                exog: torch.Tensor | None = None,
                prefix_observed: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        """Ancestral samples; after a prefix, continuations of it. A prefix with gaps has
        its missing values drawn jointly with the state from their exact conditional given
        the observed values: the simulation smoother (Durbin & Koopman 2002; under exact
        diffuse initialisation its diffuse variant, which simulates from an arbitrary
        initial state, here 0, that the smoothed means cancel)."""
        if options:
            raise ValueError(f"unknown sample options: {sorted(options)}")
        m0, P0, A, Q, C, R = self._matrices()
        S, D = self.state_dim, self._dim
        n = num_sequences
        B = self._params.get("exog_coef")
        if (B is None) != (exog is None):
            raise ValueError("exog= is needed exactly when the model has a regression on "
                             "covariates" + ("" if B is None else f" ({B.shape[1]} here)"))
        shift = None if B is None else exog @ B.T  # [n, length, D]
        gaps = prefix_observed is not None and not bool(prefix_observed.all())
        if prefix is None:
            start = m0 + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(P0).T
            steps = length
        else:
            pre = prefix.to(torch.float64).reshape(prefix.shape[0], D)
            resid = pre if shift is None else pre - shift[0, : pre.shape[0]]
            if gaps:
                obs = prefix_observed.reshape(pre.shape[0], -1).expand(-1, D)
                z, filled = self._simulation_smoother(resid, obs, n)
                last = z[:, -1]
                pre = filled if shift is None else filled + shift[:, : pre.shape[0]]
            else:
                res = self._filter(resid.unsqueeze(0))
                mf, Pf = (x[0] for x in _last_state(res, torch.tensor([pre.shape[0]]),
                                                     need=self.num_diffuse_steps))
                last = mf + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(Pf).T
            steps = length - pre.shape[-2]
            start = last @ A.T + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(Q).T
        x = self._simulate(start, steps)
        if shift is not None:
            x = x + shift[:, length - x.shape[1]:]
        if prefix is not None:
            x = torch.cat([pre.expand(n, -1, -1), x], dim=1)
        return x[..., 0] if D == 1 else x

    def _simulate(self, start: torch.Tensor, steps: int,
                  states: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[n, steps, D]`` observations of paths whose first state is ``start [n, S]``
        (and with ``states`` the states ``[n, steps, S]``)."""
        _, _, A, Q, C, R = self._matrices()
        n, S = start.shape
        D = C.shape[0]
        if steps <= 0:
            z = torch.zeros(n, 0, S, dtype=torch.float64)
        else:
            w = torch.randn(n, steps, S, dtype=torch.float64) @ _psd_sqrt(Q).T
            w[:, 0] = start
            z = inference.linear_recurrence(w, A, torch.zeros(n, S, dtype=torch.float64))
        x = z @ C.T + torch.randn(n, z.shape[1], D, dtype=torch.float64) @ _psd_sqrt(R).T
        return (x, z) if states else x

    def _simulation_smoother(self, y: torch.Tensor, observed: torch.Tensor,
                             n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n joint draws of the states and the missing values of one sequence with gaps.

        ``z = E[z | y] + z+ - E[z+ | y+]`` with ``(z+, y+)`` simulated from the model (the
        same gaps in ``y+``): an exact draw from ``p(z | y)`` (Durbin & Koopman 2002).
        Under exact diffuse initialisation ``z+`` starts from 0: the smoothed means are
        shift-equivariant in the diffuse directions, so the start cancels. A missing value
        is then ``C z_t + v_t`` with ``v_t`` drawn given the observed coordinates of step t
        (``v_obs = y_obs - C_obs z_t``).

        Args:
            y: ``[T, D]`` the prefix (its regression term removed; anything at gaps).
            observed: ``[T, D]`` bool.
            n: draws.

        Returns:
            ``(states [n, T, S], values [n, T, D])``, the values with the gaps filled.
        """
        m0, P0, A, Q, C, R = self._matrices()
        T, D = y.shape
        S = self.state_dim
        y = torch.where(observed, y, torch.zeros((), dtype=y.dtype))
        if self.initialization == "diffuse":
            z_start = torch.zeros(n, S, dtype=torch.float64)
        else:
            z_start = m0 + torch.randn(n, S, dtype=torch.float64) @ _psd_sqrt(P0).T
        y_plus, z_plus = self._simulate(z_start, T, states=True)
        y_plus = torch.where(observed, y_plus, torch.zeros((), dtype=y.dtype))
        obs = observed[:, 0] if D == 1 else observed
        both = Sequences(torch.cat([y.unsqueeze(0), y_plus]) if D > 1 else
                         torch.cat([y.unsqueeze(0), y_plus])[..., 0],
                         torch.full((n + 1,), T), obs.expand(n + 1, *obs.shape))
        params = {k: v for k, v in self._params.items() if k != "exog_coef"}
        try:
            mean = self._smoothed(both, params, cross=False)[0]
        except ValueError:
            seen = int(observed.any(-1).sum())
            raise ValueError(
                f"the prefix has {seen} observed value{'s' if seen != 1 else ''}, too few to "
                f"locate the diffuse initial state (a fully observed prefix needs "
                f"{self.num_diffuse_steps}): it does not determine a conditional to sample "
                "from") from None
        z = mean[:1] + z_plus - mean[1:]
        loc = z @ C.T  # [n, T, D]
        filled = y.expand(n, T, D).clone()
        for t in torch.nonzero(~observed.all(-1))[:, 0].tolist():
            o = observed[t]
            mis = ~o
            if bool(o.any()):
                gain = torch.linalg.solve(R[o][:, o], R[o][:, mis]).T  # [m, o]
                v_obs = y[t, o] - loc[:, t, o]
                mu = loc[:, t, mis] + v_obs @ gain.T
                cov = R[mis][:, mis] - gain @ R[o][:, mis]
            else:
                mu, cov = loc[:, t, mis], R[mis][:, mis]
            k = int(mis.sum())
            filled[:, t, mis] = mu + torch.randn(n, k, dtype=torch.float64) @ _psd_sqrt(cov).T
        return z, filled

    # ------------------------------------------------------------------ fitting
    @property
    def free_variances(self) -> list[str]:
        """The names of a structured model's free variances (``level_var``, ``obs_var``,
        ...; the sample sites of :meth:`pyro_model`); empty for an unstructured model."""
        return self._free_names()

    def params_from_variances(self, variances: Mapping[str, Any], data: Any
                              ) -> dict[str, torch.Tensor]:
        """The parameters of this structured model at given values of its free variances,
        with the initial state chosen from ``data`` as :meth:`fit` chooses it
        (differentiable in the variances).

        Args:
            variances: a value for each name of :attr:`free_variances`.
            data: the sequences the initial state is read from.

        Raises:
            ValueError: an unstructured model, or a free variance missing.
        """
        if self.structure is None:
            raise ValueError("params_from_variances needs a structured model (local_level, "
                             "local_linear_trend, structural)")
        missing = [n for n in self.free_variances if n not in variances]
        if missing:
            raise ValueError(f"no value for the free variance(s) {missing}")
        seqs, _ = self._coerce(data)
        names = self.free_variances
        free = (torch.stack([torch.as_tensor(variances[n], dtype=torch.float64) for n in names])
                if names else torch.zeros(0, dtype=torch.float64))
        prior_mean, prior_var = self._data_prior(seqs)
        return self._structured_params(free, prior_mean, prior_var)

    def _free_names(self) -> list[str]:
        if self.structure is None:
            return []
        slots = self.structure["transition_vars"] + self.structure["observation_vars"]
        # states that share a name share one variance (a trigonometric seasonal, a cycle)
        return list(dict.fromkeys(name for name, value in slots if value is None))

    def _summary_free(self, seqs: Sequences, exog: torch.Tensor | None = None) -> Any:
        """A structured model's free variances by name, its estimated dynamics in natural
        units (``cycle_damping``, ``ar_coef[j]``) and its covariate coefficients
        ``exog_coef[d,e]``; the Hessian by autograd through the Kalman filter (exact diffuse
        likelihood, gaps marginalised). Other state-space models have none (a free
        transition matrix is identified only up to a change of state basis)."""
        from probseq._summary import Blocks
        from probseq.lgssm.structural import dynamics_values, set_dynamics

        if self.structure is None:
            raise ValueError(f"{self.name} has no summary() beyond structured models (a free "
                             "state-space model is identified only up to a change of state "
                             "basis)")
        st, p, blocks = self.structure, self._params, Blocks()
        variances: dict[str, torch.Tensor] = {}
        for slots, cov in ((st["transition_vars"], p["transition_cov"]),
                           (st["observation_vars"], p["observation_cov"])):
            for i, (name, value) in enumerate(slots):
                if value is None:
                    variances.setdefault(name, cov[i, i])
        top = max((float(v) for v in variances.values()), default=1.0)
        var_parts = {n: blocks.add(n, v, non_negative=True, scale=top)
                     for n, v in variances.items()}
        dyn = st.get("dynamics") or []
        dyn_parts = [blocks.add(n, v) for n, v in dynamics_values(p["transition_matrix"], dyn)]
        coef_part = blocks.add("exog_coef", p["exog_coef"]) if "exog_coef" in p else None

        def log_lik(vec: torch.Tensor) -> torch.Tensor:
            free = torch.stack([var_parts[n](vec).reshape(()) for n in self._free_names()]
                               ) if var_parts else torch.zeros(0, dtype=torch.float64)
            A = None
            if dyn_parts:
                A = set_dynamics(torch.tensor(st["transition_matrix"], dtype=torch.float64),
                                 dyn, [part(vec) for part in dyn_parts])
            q = self._structured_params(free, p["initial_mean"], p["initial_cov"][0, 0],
                                        transition_matrix=A)
            if coef_part is not None:
                q["exog_coef"] = coef_part(vec)
            return self._total_log_lik(seqs, q, exog)

        return blocks.build(log_lik)

    def _num_free_dynamics(self) -> int:
        """The number of estimated transition parameters (a structural model's cycle and AR
        component, see :func:`probseq.lgssm.structural.free_dynamics`)."""
        from probseq.lgssm.structural import free_dynamics

        dyn = (self.structure or {}).get("dynamics")
        return sum(n for _, n in free_dynamics(dyn)) if dyn else 0

    def _structured_params(
        self, free: torch.Tensor, initial_mean: torch.Tensor, initial_var: torch.Tensor,
        unit: float = 1.0, dynamics: torch.Tensor | None = None,
        transition_matrix: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Parameters of a structured model from its free variances (differentiable) and the
        unconstrained estimated transition parameters ``dynamics`` (structural models), or
        a given ``transition_matrix`` (differentiable too).

        Fixed variances are divided by ``unit**2`` (the fit works in data units of ``unit``).
        """
        st = self.structure
        value = dict(zip(self._free_names(), free.unbind(0) if free.numel() else (),
                         strict=True))
        u2 = unit * unit
        tv = [value[n] if v is None else torch.tensor(v / u2, dtype=torch.float64)
              for n, v in st["transition_vars"]]
        ov = [value[n] if v is None else torch.tensor(v / u2, dtype=torch.float64)
              for n, v in st["observation_vars"]]
        S = self.state_dim
        A = torch.tensor(st["transition_matrix"], dtype=torch.float64)
        if transition_matrix is not None:
            A = transition_matrix
        elif dynamics is not None and dynamics.numel():
            from probseq.lgssm.structural import apply_dynamics

            A = apply_dynamics(A, st["dynamics"], dynamics)
        Q = torch.diag(torch.stack(tv))
        P0 = initial_var.to(torch.float64) * torch.eye(S, dtype=torch.float64)
        if not all(st.get("diffuse", [True])):
            # states that are not diffuse (a structural model's AR states) start from their
            # stationary distribution
            from probseq.lgssm.structural import stationary_cov

            idx = torch.tensor([i for i, d in enumerate(st["diffuse"]) if not d])
            block = stationary_cov(A[idx][:, idx], Q[idx][:, idx])
            ii, jj = torch.meshgrid(idx, idx, indexing="ij")
            P0 = P0.index_put((ii.reshape(-1), jj.reshape(-1)), block.reshape(-1))
        return {
            "initial_mean": initial_mean.to(torch.float64).reshape(S),
            "initial_cov": P0,
            "transition_matrix": A,
            "transition_cov": Q,
            "observation_matrix": torch.tensor(st["observation_matrix"], dtype=torch.float64),
            "observation_cov": torch.diag(torch.stack(ov)),
        }

    def _diffuse_start(self, initial_cov: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mixed diffuse start of a structural model with non-diffuse states:
        ``initial_cov`` (``P_*``: the proper block) and ``initial_cov_inf`` (``P_inf``) for
        :func:`inference.diffuse_kalman_filter`; empty when every state is diffuse."""
        flags = (self.structure or {}).get("diffuse")
        if flags is None or all(flags):
            return {}
        d = torch.tensor(flags, dtype=torch.float64)
        keep = 1.0 - d
        return {"initial_cov": initial_cov * torch.outer(keep, keep),
                "initial_cov_inf": torch.diag(d)}

    def _data_prior(self, seqs: Sequences, unit: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The structured model's initial mean and variance (given, or chosen from data), in
        data units of ``unit``."""
        st = self.structure
        y = seqs.values3d()
        obs = seqs.step_observed
        if st["initial_mean"] is not None:
            mean = torch.tensor(st["initial_mean"], dtype=torch.float64) / unit
        else:
            C = torch.tensor(st["observation_matrix"], dtype=torch.float64)
            first = torch.stack([y[i, int(torch.nonzero(obs[i])[0, 0])]
                                 if bool(obs[i].any()) else y[i, 0] for i in range(len(seqs))])
            mean = torch.linalg.pinv(C) @ first.mean(0)
        if st["initial_var"] is not None:
            var = torch.tensor(st["initial_var"] / unit**2, dtype=torch.float64)
        else:
            vals = y[obs]
            scale = float(vals.var()) if vals.numel() > 1 else 0.0
            var = torch.tensor(DIFFUSE_FACTOR * (scale if scale > 0 else 1.0), dtype=torch.float64)
        return mean, var

    def fit(
        self,
        data: Any,
        *,
        exog: Any = None,
        max_epochs: int = 500,
        tol: float = 1e-10,
        em_epochs: int = 0,
        restarts: int = 1,
        seed: int | None = None,
        progress: bool | None = None,
        **unknown: Any,
    ) -> LinearGaussianSSM:
        """Maximum likelihood estimation of the parameters.

        Structured models (:meth:`local_level`, :meth:`local_linear_trend`,
        :meth:`structural`) estimate their free variances; other models every parameter
        (``initial_mean``, ``initial_cov``, ``transition_matrix``, ``transition_cov``,
        ``observation_matrix``, ``observation_cov``). The likelihood maximised is
        ``log_prob`` under the model's ``initialization`` (under exact diffuse
        initialisation: the diffuse log-likelihood, as statsmodels'
        ``UnobservedComponents``). The fit is scale-equivariant: the data are
        divided by their standard deviation before optimising and the estimates scaled
        back, so fitting ``c * x`` gives the fit on ``x`` rescaled.

        Structured models under exact diffuse initialisation whose fixed variances are all 0
        (the usual case: every variance free) are fitted on a concentrated likelihood: the
        observation variance is profiled out in closed form and the ratios of the other
        variances to it are optimised by L-BFGS-B from the best point of a coarse grid of
        log ratios (from the best three with three ratios or more, which have local maxima;
        bounded Brent's method for one ratio) with the plain NumPy filter. Models with
        states that are not diffuse (an AR component), and other models, use L-BFGS-B with
        exact gradients (torch autograd) on an unconstrained parametrisation (log variances;
        Cholesky factors with log diagonals).

        Args:
            data: the sequences (``Sequences``, a list, or one sequence ``[T]`` / ``[T, D]``);
                missing values (NaN) are marginalised exactly.
            exog: covariates ``[N, T, E]`` (``[T, E]``, a DataFrame, ... for one sequence):
                adds a regression term ``exog_coef @ u_t`` to the observation equation (as
                statsmodels' ``UnobservedComponents(exog=...)``), its coefficients
                ``exog_coef [D, E]`` estimated with the other parameters (default None).
            max_epochs: the most optimiser iterations (default 500).
            tol: stop when the objective (nats per scored step) changes by less than this,
                relatively (default 1e-10).
            em_epochs: unstructured models only: EM (Shumway-Stoffer) iterations that
                warm-start L-BFGS (default 0).
            restarts: unstructured models only: fit from this many random starts and keep
                the best (default 1; the full-parameter likelihood of S >= 2 models can
                have local maxima). ``fit_result_["restart_objectives"]`` lists each
                start's maximum in nats per scored step.
            seed: seeds the random start of unstructured models (default None).
            progress: a progress bar (default None: on a terminal or in a notebook).

        Returns:
            self.

        Raises:
            ValueError: bad data, an unknown option, or data of the wrong dimension.
        """
        return super().fit(data, exog=exog, max_epochs=max_epochs, tol=tol,
                           em_epochs=em_epochs, restarts=restarts, seed=seed,
                           progress=progress, **unknown)

    def _fit(
        self,
        seqs: Sequences,
        *,
        max_epochs: int = 500,
        seed: int | None = None,
        progress: bool | None = None,
        tol: float = 1e-10,
        em_epochs: int = 0,
        restarts: int = 1,
        exog: torch.Tensor | None = None,
    ) -> None:
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts!r}")
        # the constructor's obs_dim is checked, never overwritten (get_config is unchanged
        # by fit, and a model built with obs_dim=None can be refitted to other data)
        if self.obs_dim is not None:
            check_sequences(seqs, model=self.name, dim=self.obs_dim)
        D = self.obs_dim or seqs.dim or 1
        if self.initialization == "diffuse" and D != 1:
            raise ValueError("exact diffuse initialization is implemented for D = 1 only")
        vals = seqs.values3d()[seqs.step_observed]
        if vals.shape[0] > 1 and bool((vals.std(0) == 0).any()):
            raise ValueError("the data are constant (in some coordinate): the likelihood of a "
                             f"{self.name} is unbounded there; add noise or drop it")
        unit = _unit(seqs)
        scaled = Sequences(seqs.values / unit, seqs.lengths,
                           seqs.observed if seqs.has_missing else None)
        if exog is not None and em_epochs > 0:
            raise ValueError("em_epochs is not available with covariates; use em_epochs=0")
        self._fit_exog = exog
        try:
            if self.structure is not None:
                params, info = self._fit_structured(scaled, unit, max_epochs, tol, progress)
            else:
                params, info = self._fit_full(scaled, D, max_epochs, tol, em_epochs, progress,
                                              restarts)
            with torch.no_grad():
                self._refuse_degenerate(scaled, params)
        finally:
            self._fit_exog = None
        params = _rescale(params, unit, self.structure is not None)
        if self.structure is not None:  # fixed variances exactly as given (no rounding)
            for key, slots in (("transition_cov", "transition_vars"),
                               ("observation_cov", "observation_vars")):
                for i, (_, v) in enumerate(self.structure[slots]):
                    if v is not None:
                        params[key][i, i] = v
        self._params = _check_params(params)
        self._obs_dim = D
        if info is not None:
            info["log_lik"] = float(self._log_prob(seqs, **({} if exog is None else
                                                           {"exog": exog})).sum())
        self.fit_result_ = info

    def _refuse_degenerate(self, seqs: Sequences, params: dict[str, torch.Tensor]) -> None:
        """Refuse a fit whose one-step predictions are (nearly) exact: on data in units of
        their scale an innovation variance below 1e-10 means the likelihood is unbounded
        (constant or exactly linear data) and every score would be absurd."""
        for _, _, res in self._filter_groups(seqs, params, self._fit_exog):
            d = res.covs.num_diffuse
            innov = torch.diagonal(res.covs.innov_cov[d:], dim1=-2, dim2=-1)
            if innov.numel() and float(innov.min()) < 1e-10:
                raise ValueError(
                    f"{self.name} predicts these data exactly (one-step variance "
                    f"{float(innov.min()):.2g} of the data's variance): constant or exactly "
                    "predictable series have an unbounded likelihood; add noise or use a "
                    "simpler model")

    def _fit_structured(self, seqs: Sequences, unit: float, max_epochs: int, tol: float,
                        progress: bool | None):
        """Structured fit on data in units of ``unit`` (parameters in those units)."""
        prior_mean, prior_var = self._data_prior(seqs, unit)
        names = self._free_names()
        m = self._num_free_dynamics()
        if not names and not m:
            return self._structured_params(torch.zeros(0), prior_mean, prior_var, unit), None
        fixed = [v for _, v in self.structure["transition_vars"]
                 + self.structure["observation_vars"] if v is not None]
        if (self.initialization == "diffuse" and all(v == 0.0 for v in fixed)
                and self._fit_exog is None and all(self.structure.get("diffuse", [True]))
                and not m
                and self.structure["observation_vars"][0][1] is None):
            free, info = self._fit_concentrated(seqs, names, max_epochs, tol)
            return self._structured_params(free, prior_mean, prior_var, unit), info
        scale = _diff_variance(seqs)
        k = len(names)
        x0 = np.full(k, math.log(0.5))
        bounds = [(math.log(1e-12), math.log(1e8))] * k
        if m:  # a structural model's cycle / AR parameters (unconstrained)
            from probseq.lgssm.structural import dynamics_start

            x0 = np.concatenate([x0, dynamics_start(self.structure["dynamics"])])
            bounds = bounds + [(-30.0, 30.0)] * m

        def build(theta: torch.Tensor) -> dict[str, torch.Tensor]:
            return self._structured_params(scale * torch.exp(theta[:k]), prior_mean,
                                           prior_var, unit, theta[k: k + m] if m else None)

        build, x0, bounds = self._with_exog_coef(seqs, build, x0, bounds, k + m)
        return self._minimize(seqs, build, x0, bounds, max_epochs, tol, progress)

    def _with_exog_coef(self, seqs: Sequences, build, x0: np.ndarray, bounds, k: int):
        """Append the regression coefficients ``[D, E]`` (started at the least-squares fit
        of the first differences) to an unconstrained parameter vector of size k."""
        exog = self._fit_exog
        if exog is None:
            return build, x0, bounds
        y = seqs.values3d()
        D, E = y.shape[-1], exog.shape[-1]
        obs = seqs.step_observed
        pair = obs[:, 1:] & obs[:, :-1]
        dy = (y[:, 1:] - y[:, :-1])[pair]
        dx = (exog[:, 1 : y.shape[1]] - exog[:, : y.shape[1] - 1])[pair]
        if dx.shape[0] > E:
            B0 = torch.linalg.lstsq(dx, dy).solution.T  # [D, E]
        else:
            B0 = torch.zeros(D, E, dtype=torch.float64)

        def with_b(theta: torch.Tensor) -> dict[str, torch.Tensor]:
            return dict(build(theta), exog_coef=theta[k:].reshape(D, E))

        x0 = np.concatenate([x0, B0.reshape(-1).numpy()])
        if bounds is not None:
            bounds = list(bounds) + [(None, None)] * (D * E)
        return with_b, x0, bounds

    def _fit_concentrated(self, seqs: Sequences, names: list[str], max_epochs: int,
                          tol: float) -> tuple[torch.Tensor, dict[str, Any]]:
        """Profile likelihood of a diffuse structured model: every free variance is
        ``sigma2 * ratio`` with the observation variance's ratio 1; ``sigma2`` has the closed
        form ``mean(v_t^2 / F_t)`` over the scored steps."""
        from scipy.optimize import minimize, minimize_scalar

        st = self.structure
        A = torch.tensor(st["transition_matrix"], dtype=torch.float64)
        C = torch.tensor(st["observation_matrix"], dtype=torch.float64)
        slots = st["transition_vars"] + st["observation_vars"]
        obs_name = st["observation_vars"][0][0]  # the observation variance (free here)
        others = [n for n in names if n != obs_name]  # states sharing a name share a ratio
        y = seqs.values3d()
        S = self.state_dim
        n_scored = None
        groups = _patterns(seqs)
        small = None
        if S <= 2 and not seqs.has_missing:
            small = [row[:n].numpy() for row, n in zip(y[..., 0], seqs.lengths.tolist(),
                                                         strict=True)]
            A_np, c_np = A.numpy(), C[0].numpy()

        def profile(log_ratios: np.ndarray) -> tuple[float, float]:
            nonlocal n_scored
            ratio = dict(zip(others, np.exp(log_ratios), strict=True), **{obs_name: 1.0})
            var = np.array([ratio[n] if v is None else 0.0 for n, v in slots])
            if small is not None:  # Python floats and lfilter, one sequence at a time
                quad, logdet, n = 0.0, 0.0, 0
                for row in small:
                    q_, l_, n_ = inference.innovation_sums_small(row, A_np, c_np, var[:S])
                    quad, logdet, n = quad + q_, logdet + l_, n + n_
            else:
                Q = torch.diag(torch.tensor(var[:S], dtype=torch.float64))
                R = torch.tensor([[1.0]], dtype=torch.float64)
                quad, logdet, n = 0.0, 0.0, 0
                with torch.no_grad():
                    for rows, pattern in groups:
                        q_, l_, n_ = inference.innovation_sums(y[rows], seqs.mask[rows], A, Q,
                                                               C, R, pattern)
                        quad, logdet, n = quad + q_, logdet + l_, n + n_
            n_scored = n
            if n == 0:
                return 0.0, 1.0
            sigma2 = quad / n
            if not sigma2 > 0:
                return math.inf, 0.0
            return 0.5 * (n * (_LOG_2PI + math.log(sigma2) + 1.0) + logdet), sigma2

        lo, hi = math.log(1e-10), math.log(1e10)
        if len(others) == 1:
            res = minimize_scalar(lambda z: profile(np.array([z]))[0], bounds=(lo, hi),
                                  method="bounded",
                                  options={"xatol": 1e-9, "maxiter": max(max_epochs, 50)})
            x, ok, nit, msg = np.array([res.x]), bool(res.success), int(res.nfev), str(res.message)
        elif not others:
            x, ok, nit, msg = np.zeros(0), True, 0, "closed form"
        else:
            # start from the best of a coarse grid (the profile is often flat in one ratio)
            k = len(others)
            levels = (-20.0, -9.0, -4.0, 0.0)
            if k <= 3:  # every pair or triple: a ratio is often at its lower end
                grid = [np.array(g) for g in itertools.product(levels, repeat=k)]
            else:  # all equal, and each ratio near 0 with the others equal
                grid = [np.full(k, g) for g in levels]
                grid += [np.where(np.arange(k) == i, -20.0, g) for i in range(k)
                         for g in (-4.0, 0.0)]
            # more ratios, more local maxima (statsmodels' structural fits too): L-BFGS-B
            # from the best three grid points when there are three ratios or more
            starts = sorted(grid, key=lambda g: profile(g)[0])[: 1 if k <= 2 else 3]
            scale = 1.0 / max(n_scored or 1, 1)  # nats per scored step
            res = None
            for x0 in starts:
                out = minimize(lambda z: scale * profile(z)[0], x0, method="L-BFGS-B",
                               bounds=[(lo, hi)] * k,
                               options={"maxiter": max_epochs, "ftol": tol, "gtol": 1e-9,
                                        "eps": 1e-7})
                if res is None or out.fun < res.fun:
                    res = out
            x, ok, nit, msg = res.x, bool(res.success), int(res.nit), str(res.message)
        _, sigma2 = profile(x)
        if not n_scored:
            raise ValueError(
                f"no sequence is longer than the {self.num_diffuse_steps} diffuse step(s) of "
                "this model: nothing is left to fit the variances to")
        if not sigma2 > 0:
            raise ValueError(
                f"{self.name} predicts these data exactly (every innovation is 0): constant or "
                "exactly predictable series have an unbounded likelihood; add noise or use a "
                "simpler model")
        ratio = dict(zip(others, np.exp(x), strict=True), **{obs_name: 1.0})
        free = torch.tensor([sigma2 * ratio[n] for n in names], dtype=torch.float64)
        info = {"converged": ok, "message": f"concentrated likelihood: {msg}",
                "iterations": nit, "scored_steps": n_scored}
        return free, info

    def _fit_full(self, seqs: Sequences, D: int, max_epochs: int, tol: float, em_epochs: int,
                  progress: bool | None, restarts: int = 1):
        """Full-parameter fit; with ``restarts > 1`` the best of that many random starts."""
        best = None
        scores = []
        for _ in range(restarts):
            params, info = self._fit_full_once(seqs, D, max_epochs, tol, em_epochs, progress)
            scores.append(-info["objective"])
            if best is None or info["objective"] < best[1]["objective"]:
                best = (params, info)
        params, info = best
        info["restart_objectives"] = scores  # nats per scored step, per start
        return params, info

    def _fit_full_once(self, seqs: Sequences, D: int, max_epochs: int, tol: float,
                       em_epochs: int, progress: bool | None):
        unpack, x0, pack = _unstructured_parametrisation(seqs, self.state_dim, D)
        k = len(x0)
        if em_epochs > 0 and seqs.has_missing:
            raise ValueError("em_epochs needs data without missing values (the EM M-step "
                             "here uses complete observations); use em_epochs=0")
        if em_epochs > 0:
            params = self._fit_em(seqs, D, em_epochs, tol, progress)
            x0 = pack(params)

        def build(theta: torch.Tensor) -> dict[str, torch.Tensor]:
            return unpack(theta[:k])

        build, x0, _ = self._with_exog_coef(seqs, build, x0, None, k)
        return self._minimize(seqs, build, x0, None, max_epochs, tol, progress)

    def _minimize(self, seqs: Sequences, build, x0: np.ndarray, bounds, max_epochs: int,
                  tol: float, progress: bool | None):
        """L-BFGS-B on ``-log_prob / scored steps`` with torch gradients."""
        from scipy.optimize import minimize

        n_steps = max(seqs.num_observed - self.num_diffuse_steps * len(seqs), 1)

        def objective(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
            theta = torch.tensor(theta_np, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                params = build(theta)
                loss = -self._total_log_lik(seqs, params, self._fit_exog) / n_steps
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
        info = {"converged": bool(result.success), "message": str(result.message),
                "iterations": int(result.nit), "objective": float(result.fun)}
        return {k: v.detach() for k, v in params.items()}, info

    def _fit_em(self, seqs: Sequences, D: int, max_epochs: int, tol: float,
                progress: bool | None) -> dict[str, torch.Tensor]:
        """EM (Shumway-Stoffer) for the full model: closed-form M-steps on smoothed
        moments; the log-likelihood never decreases."""
        unpack, x0, _ = _unstructured_parametrisation(seqs, self.state_dim, D)
        params = {k: v.detach() for k, v in unpack(torch.tensor(x0)).items()}
        y, mask, n_steps = seqs.values3d(), seqs.mask, seqs.num_steps
        eye_s = torch.eye(self.state_dim, dtype=torch.float64)
        prev = -math.inf
        bar = progress_bar(max_epochs, progress, f"{self.name} fit (EM)")
        with torch.no_grad():
            try:
                for _ in range(max_epochs):
                    mean, cov, cross, log_lik = self._smoothed(seqs, params)
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
                        break
                    prev = total
                    params = candidate
            finally:
                bar.close()
        return _check_params(params)

    def _smoothed(self, seqs: Sequences, params: dict[str, torch.Tensor],
                  exog: torch.Tensor | None = None, cross: bool = True):
        """Smoothed means ``[N, T, S]``, covariances ``[N, T, S, S]``, lag-one
        cross-covariances ``[N, T - 1, S, S]`` (only needed by EM: ``cross=False`` skips the
        diffuse steps' ones) and log-likelihoods ``[N]``."""
        y = self._residual(seqs, exog, params)
        seqs = Sequences(y if seqs.values.dim() == 3 else y[..., 0], seqs.lengths,
                         seqs.observed if seqs.has_missing else None)
        core = {k: v for k, v in params.items() if k != "exog_coef"}
        groups = self._filter_groups(seqs, core)
        patterns = _patterns(seqs)
        if len(groups) == 1:
            return self._smoothed_group(seqs, core, groups[0][2], patterns[0][1], cross,
                                        groups[0][0])
        N, T, S = len(seqs), seqs.max_length, self.state_dim
        outs = (torch.empty(N, T, S, dtype=torch.float64),
                torch.empty(N, T, S, S, dtype=torch.float64),
                torch.zeros(N, max(T - 1, 0), S, S, dtype=torch.float64),
                torch.empty(N, dtype=torch.float64))
        for (rows, sub, res), (_, pattern) in zip(groups, patterns, strict=True):
            part = self._smoothed_group(sub, core, res, pattern, cross, rows)
            for full, p in zip(outs, part, strict=True):
                full[rows] = p
        return outs

    def _smoothed_group(self, seqs: Sequences, params: dict[str, torch.Tensor],
                        res: inference.FilterResult, pattern: torch.Tensor | None,
                        cross: bool = True, rows: torch.Tensor | None = None):
        out = _smoothed_from(seqs, params, res)
        d = res.covs.num_diffuse
        if not d:
            return out
        _, _, A, Q, C, R = self._matrices(params)
        y = seqs.values3d()
        for length in torch.unique(seqs.lengths).tolist():
            idx = torch.nonzero(seqs.lengths == length)[:, 0]
            try:
                at_d = (out[0][idx, d], out[1][idx[0], d]) if length > d else None
                m, P = inference.diffuse_smoother(y[idx], _take(res, idx), A, Q, C, R, length,
                                                  pattern, at_d)
            except ValueError:
                i = int(idx[0]) if rows is None else int(rows[idx[0]])
                seen = _num_observed(seqs, int(idx[0]))
                raise ValueError(
                    f"sequence {i} does not locate the diffuse initial state (it has {seen} "
                    f"observed value{'s' if seen != 1 else ''}; a fully observed "
                    f"sequence needs {self.num_diffuse_steps}): its smoothed state has an "
                    "infinite variance") from None
            k = m.shape[1]
            out[0][idx, :k] = m
            out[1][idx, :k] = P
            if length <= d:  # padding repeats the last step
                out[0][idx, length:] = m[:, -1:]
                out[1][idx, length:] = P[-1]
        located = inference.diffuse_located(res.covs)
        t0 = located.index(True) if True in located else d
        if cross and t0 > 0:
            # EM's starting values only: the lag-one cross-covariances of the steps whose
            # filtered state is still diffuse come from proper priors N(0, kappa I), kappa =
            # k and 2k with k 1e5 times the located state's largest variance, extrapolated to
            # kappa -> inf (Richardson); the fit itself maximises the exact likelihood.
            k = 1e5 * (float(torch.diagonal(res.covs.pred_cov[d]).max()) if (
                res.covs.num_unique > d) else 1.0)
            S = self.state_dim
            near = []
            start = self._diffuse_start(params["initial_cov"])
            for kappa in (k, 2.0 * k):
                P0 = (kappa * torch.eye(S, dtype=torch.float64) if not start else
                      start["initial_cov"] + kappa * start["initial_cov_inf"])
                approx = dict(params, initial_mean=torch.zeros(S, dtype=torch.float64),
                              initial_cov=P0)
                m0, P0, A, Q, C, R = self._matrices(approx)
                filt = inference.kalman_filter(y, m0, P0, A, Q, C, R, observed=pattern)
                near.append(_smoothed_from(seqs, approx, filt)[2])
            out[2][:, :t0] = 2.0 * near[1][:, :t0] - near[0][:, :t0]
        return out

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

        seqs, _ = self._coerce(data, fitting=self._obs_dim == "any")
        scale = float(prior_scale) if prior_scale is not None else _diff_variance(seqs)
        if not scale > 0:
            raise ValueError(f"prior_scale must be positive, got {prior_scale!r}")
        if self.structure is not None:
            names = self._free_names()
            if not names:
                raise ValueError("this structured model has no free variance to infer")
            if self._num_free_dynamics():
                raise ValueError("pyro_model infers variances only: give this structural "
                                 "model's cycle_period, cycle_damping and ar_coef")
            prior_mean, prior_var = self._data_prior(seqs)
        else:
            self._check_fitted()
            names = []
        S = self.state_dim
        D = self.obs_dim or seqs.dim or 1

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
            pyro.factor("log_lik", self._total_log_lik(seqs, params))

        return model


    # ------------------------------------------------------------------ forecast hooks
    def _step_predictive(self, seqs: Sequences,
                         exog: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """One-step predictive distributions ``p(x_t | x_0..x_(t-1))``, batch ``[N, T_max]``:
        ``Normal`` (D = 1) or ``MultivariateNormal`` (D >= 2) with mean
        ``C m_(t|t-1) (+ exog_coef @ u_t)`` and covariance ``C P_(t|t-1) C' + R`` (over
        missing values the filter predicts through). Under exact diffuse initialisation the
        first ``num_diffuse_steps`` steps have an infinite variance (they are not scored)."""
        m0, P0, A, Q, C, R = self._matrices()
        N, T, D = len(seqs), seqs.max_length, self._dim
        loc = torch.zeros(N, T, D, dtype=torch.float64)
        cov = torch.zeros(N, T, D, D, dtype=torch.float64)
        for rows, _, res in self._filter_groups(seqs, exog=exog):
            loc[rows] = res.pred_mean @ C.T
            P = res.covs.per_step(res.covs.pred_cov, T)  # [T, S, S]
            F = C @ P @ C.T + R
            d = res.covs.num_diffuse
            if d:
                inf_part = C @ res.covs.pred_cov_inf @ C.T  # [d, D, D]
                diffuse = torch.diagonal(inf_part, dim1=-2, dim2=-1) > (
                    inference.DIFFUSE_TOL * float((C**2).sum()))
                F = F.clone()
                diag = torch.diagonal(F[:d], dim1=-2, dim2=-1)
                diag[diffuse] = math.inf
            cov[rows] = F
        if exog is not None:
            loc = loc + exog[:, :T] @ self._params["exog_coef"].T
        if D == 1:
            return torch.distributions.Normal(loc[..., 0], cov[..., 0, 0].sqrt(),
                                              validate_args=False)
        return torch.distributions.MultivariateNormal(loc, cov, validate_args=False)

    def _forecast(self, seqs: Sequences, horizon: int,
                  exog: torch.Tensor | None = None) -> torch.distributions.Distribution:
        """Exact marginal h-step predictive distributions after each sequence, batch
        ``[N, H]``: ``Normal`` (D = 1) or ``MultivariateNormal`` (D >= 2); ``exog``
        ``[N, T_max + H, E]`` covers the future steps of a model with covariates."""
        mean, cov = self._forecast_moments(seqs, horizon, exog)
        if self._dim == 1:
            return torch.distributions.Normal(mean[..., 0], cov[..., 0, 0].sqrt())
        return torch.distributions.MultivariateNormal(mean, cov)


# ---------------------------------------------------------------------- helpers
def _smoothed_from(seqs: Sequences, params: dict[str, torch.Tensor],
                  res: inference.FilterResult):
    """Smoothed means ``[N, T, S]``, covariances ``[N, T, S, S]``, lag-one cross-covariances
    ``[N, T - 1, S, S]`` (padding repeats the last step, cross-covariances are 0 there) and
    the log-likelihood ``[N]``, from the filter's result ``res``. The backward pass runs once
    per distinct length."""
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


def _patterns(seqs: Sequences) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Groups of rows that share an observation pattern: ``(rows, pattern)`` with pattern
    ``[T_max]`` (univariate) or ``[T_max, D]`` bool, None for rows without gaps (padding
    counts as observed: it comes after the real steps and is masked out)."""
    N = len(seqs)
    if not seqs.has_missing:
        return [(torch.arange(N), None)]
    obs = seqs.observed
    pad = ~seqs.mask
    obs = obs | (pad if obs.dim() == 2 else pad.unsqueeze(-1))
    flat = obs.reshape(N, -1)
    full = flat.all(1)
    groups: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    if bool(full.any()):
        groups.append((torch.nonzero(full)[:, 0], None))
    rest = torch.nonzero(~full)[:, 0]
    if len(rest):
        uniq, inv = torch.unique(flat[rest], dim=0, return_inverse=True)
        for g in range(len(uniq)):
            rows = rest[inv == g]
            groups.append((rows, obs[rows[0]]))
    return groups


def _last_state(res: inference.FilterResult, lengths: torch.Tensor,
                observed: torch.Tensor | None = None,
                rows: torch.Tensor | None = None, need: int = 0,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered mean ``[N, S]`` and covariance ``[N, S, S]`` at each sequence's last step.

    Args:
        res: the filter of a group of sequences sharing one observation pattern.
        lengths: ``[N]``; observed: ``[N, T_max]`` steps with a value (for the message);
        rows: the group's row numbers in the user's batch (for the message).
        need: the model's ``num_diffuse_steps`` (for the message).

    Raises:
        ValueError: a sequence ends while its state is still diffuse (too few observed
            values to locate it).
    """
    last = lengths - 1
    covs = res.covs
    if covs.num_diffuse:
        located = inference.diffuse_located(covs)
        for i, t in enumerate(last.tolist()):
            if t < covs.num_diffuse and not located[t]:
                seen = t + 1 if observed is None else int(observed[i, : t + 1].sum())
                row = i if rows is None else int(rows[i])
                raise ValueError(
                    f"sequence {row} has {seen} observed value{'s' if seen != 1 else ''}, too "
                    "few to locate the diffuse initial state at its last step (a fully "
                    f"observed sequence needs {need}; gaps can need more)")
    mean = res.filt_mean[torch.arange(len(lengths)), last]
    return mean, covs.filt_cov[covs.index(res.filt_mean.shape[1])[last]]


def _unit(seqs: Sequences) -> float:
    """The observed values' standard deviation (their largest magnitude when constant, 1
    when all zero): the fit runs on the data divided by it, so that the data ``c * x`` and
    ``x`` give the same numbers to the optimiser (up to rounding)."""
    vals = seqs.values3d()[seqs.step_observed]
    scale = float(vals.std()) if vals.numel() > 1 else 0.0
    if not scale > 0:
        scale = float(vals.abs().max()) if vals.numel() else 0.0
    if not (scale > 0 and math.isfinite(scale)):
        return 1.0
    return scale


def _rescale(params: dict[str, torch.Tensor], unit: float,
             state_in_data_units: bool) -> dict[str, torch.Tensor]:
    """Parameters fitted to ``x / unit`` turned into those of ``x``: structured models keep
    their state in data units (means times ``unit``, covariances times ``unit**2``); other
    models keep the state and scale the observation matrix."""
    p = dict(params)
    u2 = unit * unit
    p["observation_cov"] = p["observation_cov"] * u2
    if "exog_coef" in p:
        p["exog_coef"] = p["exog_coef"] * unit
    if state_in_data_units:
        p["initial_mean"] = p["initial_mean"] * unit
        p["initial_cov"] = p["initial_cov"] * u2
        p["transition_cov"] = p["transition_cov"] * u2
    else:
        p["observation_matrix"] = p["observation_matrix"] * unit
    return p


def _take(res: inference.FilterResult, idx: torch.Tensor) -> inference.FilterResult:
    """The filter's result for the rows ``idx`` (the covariances are shared)."""
    return inference.FilterResult(res.log_prob_steps[idx], res.filt_mean[idx],
                                  res.pred_mean[idx], res.covs)


def _num_observed(seqs: Sequences, i: int) -> int:
    """The steps of sequence ``i`` with an observed value."""
    n = int(seqs.lengths[i])
    return int(seqs.step_any_observed[i, :n].sum()) if seqs.has_missing else n


def _full_width(seqs: Sequences, rows: torch.Tensor) -> Sequences:
    """The sequences ``rows`` of a batch, padded to the batch's full width ``T_max`` (a
    group's filter runs over that width, so its results line up with the batch's)."""
    obs = seqs.observed[rows] if seqs.has_missing else None
    return Sequences(seqs.values[rows], seqs.lengths[rows], obs)


def _carry_index(seqs: Sequences) -> torch.Tensor:
    """``[N, T_max]`` time index that repeats each sequence's last step over its padding."""
    t = torch.arange(seqs.max_length)
    return torch.minimum(t[None, :], (seqs.lengths - 1)[:, None])


def _diff_variance(seqs: Sequences) -> float:
    """A scale for noise variances: the mean variance of the first differences (or values)."""
    y = seqs.values3d()
    obs = seqs.step_observed
    if seqs.max_length > 1:
        both = obs[:, 1:] & obs[:, :-1]
        if int(both.sum()) > 1:
            v = float((y[:, 1:] - y[:, :-1])[both].var(0).mean())
            if v > 0:
                return v
    v = float(y[obs].var(0).mean()) if int(obs.sum()) > 1 else 0.0
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
    # structural models (probseq.lgssm.structural)
    optional = {"diffuse", "components", "dynamics"}
    if not keys <= set(structure) <= keys | optional:
        raise ValueError(f"structure needs the keys {sorted(keys)} (optionally "
                         f"{sorted(optional)})")
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
    out = {
        "transition_matrix": A.tolist(),
        "observation_matrix": C.tolist(),
        "transition_vars": [[str(n), None if v is None else float(v)] for n, v in tv],
        "observation_vars": [[str(n), None if v is None else float(v)] for n, v in ov],
        "initial_mean": None if mean is None else [float(m) for m in mean],
        "initial_var": None if var is None else float(var),
    }
    if "diffuse" in structure:
        flags = structure["diffuse"]
        if len(flags) != S or not all(isinstance(f, bool) for f in flags):
            raise ValueError(f"structure['diffuse'] must hold {S} booleans")
        out["diffuse"] = list(flags)
    if "components" in structure:
        comps = structure["components"]
        if not all(len(c) == 2 and len(c[1]) == S for c in comps):
            raise ValueError(f"structure['components'] must hold [name, {S} weights] pairs")
        out["components"] = [[str(n), [float(x) for x in w]] for n, w in comps]
    if "dynamics" in structure:
        dyn = structure["dynamics"]
        if not all(len(d) == 4 and d[0] in ("cycle", "ar") and 0 <= int(d[1]) < S
                   for d in dyn):
            raise ValueError("structure['dynamics'] must hold [kind, state, ., .] entries "
                             "(see probseq.lgssm.structural.Structure)")
        out["dynamics"] = [list(d) for d in dyn]
    return out


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
    if raw.get("exog_coef") is not None:
        B = _as_tensor(raw["exog_coef"], "exog_coef")
        D0 = _as_tensor(raw["observation_matrix"], "observation_matrix")
        D0 = D0.reshape(1, 1) if D0.ndim == 0 else D0
        B = B.reshape(D0.shape[0], -1) if B.ndim < 2 else B
        if B.ndim != 2 or B.shape[0] != D0.shape[0]:
            raise ValueError(f"exog_coef must be [D, E] with D={D0.shape[0]}, got shape "
                             f"{tuple(B.shape)}")
        p["exog_coef"] = B
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
        # Scale-free checks: every entry is judged on its correlation scale d_i d_j, so a
        # state in units of 1e-6 is checked as strictly as one in units of 1e6.
        if bool((torch.diagonal(M) < 0).any()):
            kind = "definite" if k == "observation_cov" else "semi-definite"
            raise ValueError(f"{k} is not positive {kind} (a negative variance)")
        d = torch.diagonal(M).sqrt()
        dd = torch.outer(d, d)
        if bool(((M - M.T).abs() > _SYM_TOL * dd).any()):
            raise ValueError(f"{k} is not symmetric")
        M = 0.5 * (M + M.T)
        p[k] = M
        if k == "observation_cov":
            if int(torch.linalg.cholesky_ex(M)[1]) != 0:
                raise ValueError(f"{k} is not positive definite")
        else:
            live = d > 0
            corr = M[live][:, live] / dd[live][:, live]
            if corr.numel() and float(torch.linalg.eigvalsh(corr).min()) < -1e-12 * len(d):
                raise ValueError(f"{k} is not positive semi-definite")
    return p


def _unstructured_parametrisation(seqs: Sequences, S: int, D: int):
    """Unconstrained parameters for a full LGSSM and a data-driven start.

    ``theta`` holds A, C, mu0 freely and the covariances as Cholesky factors with log
    diagonals. Returns ``(unpack, theta0, pack)``.
    """
    y = seqs.values3d()
    obs = y[seqs.step_observed]  # [observed steps, D]
    cov = torch.atleast_2d(torch.cov(obs.T)) if obs.shape[0] > 1 else torch.eye(D)
    # the fit passes data in units of their standard deviation (or magnitude), so a jitter
    # of 1e-6 is relative to the data's scale (and keeps constant data usable)
    cov = cov + 1e-6 * torch.eye(D, dtype=torch.float64)
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
