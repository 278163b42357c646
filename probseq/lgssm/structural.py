"""Structural time-series models (statsmodels' ``UnobservedComponents``) in state-space form.

:func:`build` turns a choice of components into the matrices of a structured
:class:`~probseq.lgssm.model.LinearGaussianSSM`: the transition matrix A, the observation
row C, one noise variance per state (tied by name where several states share one), which
states start diffuse, and each component's weights over the states (what
:meth:`~probseq.lgssm.model.LinearGaussianSSM.decompose` reads). The states are ordered as
statsmodels orders them: level, slope, dummy seasonal, trigonometric seasonals, cycle,
autoregressive.

Components (``z`` the state, ``e`` independent Gaussian noise)::

    level       mu_t = mu_(t-1) + beta_(t-1) + e            (level_var; beta only with trend)
    slope       beta_t = beta_(t-1) + e                      (slope_var)
    seasonal    g_t = -(g_(t-1) + ... + g_(t-s+1)) + e       (seasonal_var; s - 1 states)
    trig        [g_j, g*_j]_t = R(2 pi j / period) [g_j, g*_j]_(t-1) + e   (j = 1..harmonics,
                one variance freq_seasonal_var for all 2 * harmonics states)
    cycle       [c, c*]_t = rho R(lambda) [c, c*]_(t-1) + e  (cycle_var on both states)
    AR(p)       a_t = phi_1 a_(t-1) + ... + phi_p a_(t-p) + e   (ar_var)
    x_t = mu_t + g_t + sum_j g_j,t + c_t + a_t + N(0, obs_var)

with ``R(w) = [[cos w, sin w], [-sin w, cos w]]``. Every state is diffuse except the AR
states, which start from their stationary distribution (statsmodels'
``use_exact_diffuse=True`` initialisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["Structure", "build", "stationary_cov", "Decomposition", "free_dynamics",
           "dynamics_start", "apply_dynamics"]


@dataclass
class Structure:
    """The state-space form of a structural model (JSON-able lists).

    Attributes:
        transition_matrix: ``[S, S]``.
        observation_matrix: ``[1, S]``.
        transition_vars: per state ``[name, value or None]`` (None: estimated; states with
            the same name share one variance).
        observation_vars: ``[[name, value or None]]``.
        diffuse: per state, True where the state starts diffuse.
        components: ``[name, weights [S]]``: a component's value is ``weights @ z_t``.
        dynamics: the blocks of A with parameters: ``["cycle", first state, period or None,
            damping or None]`` and ``["ar", first state, order, coefficients or None]`` (None:
            estimated by ``fit``; A then holds a placeholder there).
    """

    transition_matrix: list
    observation_matrix: list
    transition_vars: list
    observation_vars: list
    diffuse: list
    components: list
    dynamics: list


def _variance(name: str, value: Any, stochastic: bool) -> list:
    """One noise slot: ``[name, None]`` (free), ``[name, value]`` (fixed) or 0 when the
    component is deterministic."""
    if value is not None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or None, got {value!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    if not stochastic:
        if value not in (None, 0.0):
            raise ValueError(f"{name}={value} contradicts a deterministic component (its "
                             "stochastic_* keyword is False): leave it None or 0")
        return [name, 0.0]
    return [name, value]


def _rotation(w: float) -> np.ndarray:
    return np.array([[math.cos(w), math.sin(w)], [-math.sin(w), math.cos(w)]])


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _freq_specs(freq_seasonal: Any, stochastic: Any, variances: Any) -> list[tuple]:
    """``(period, harmonics, stochastic, variance)`` per trigonometric seasonal."""
    if freq_seasonal is None:
        return []
    if isinstance(freq_seasonal, dict):
        freq_seasonal = [freq_seasonal]
    specs = list(freq_seasonal)
    n = len(specs)
    if stochastic is None or isinstance(stochastic, bool):
        stochastic = [True if stochastic is None else stochastic] * n
    if variances is None or np.ndim(variances) == 0:
        variances = [variances] * n
    if len(stochastic) != n or len(variances) != n:
        raise ValueError(f"stochastic_freq_seasonal and freq_seasonal_var need one entry per "
                         f"trigonometric seasonal ({n})")
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "period" not in spec or set(spec) - {"period",
                                                                            "harmonics"}:
            raise ValueError("each freq_seasonal entry is a dict {'period': p, 'harmonics': h} "
                             f"(harmonics optional), got {spec!r}")
        try:
            period = float(spec["period"])
        except (TypeError, ValueError):
            raise ValueError(f"freq_seasonal period must be a number, got "
                             f"{spec['period']!r}") from None
        if not (math.isfinite(period) and period > 2.0):
            raise ValueError(f"freq_seasonal period must be a number > 2, got {period!r}")
        h = spec.get("harmonics", int(math.floor(period / 2)))
        h = _check_int(h, "freq_seasonal harmonics", 1)
        if 2 * h >= period:
            raise ValueError(
                f"freq_seasonal with period {period:g} takes at most "
                f"{math.ceil(period / 2) - 1} harmonics (got {h}): the harmonic at the Nyquist "
                "frequency (2 * harmonics = period) has a state the data never reach; use the "
                "dummy seasonal (seasonal=period) for a full seasonal of an integer period")
        out.append((period, h, bool(stochastic[i]), variances[i]))
    return out


def build(
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
) -> Structure:
    """The state-space form of a structural model (see the module docstring).

    Keywords as :meth:`probseq.LinearGaussianSSM.structural` documents them.

    Raises:
        ValueError: an impossible or unsupported combination, named.
    """
    if not irregular:
        raise ValueError("irregular=False (no observation noise) is not supported: the "
                         "observation variance must be positive")
    if trend and not level:
        raise ValueError("a trend (slope) needs a level: use level=True")
    blocks: list[tuple[np.ndarray, list, list[bool], list[tuple[str, np.ndarray]]]] = []
    dynamics: list[tuple[str, int, Any, Any]] = []  # (kind, block number, ., .)
    # each block: (A block, variance slots, diffuse flags, [(component, C weights)])
    if level:
        if trend:
            blocks.append((np.array([[1.0, 1.0], [0.0, 1.0]]),
                           [_variance("level_var", level_var, stochastic_level),
                            _variance("slope_var", slope_var, stochastic_trend)],
                           [True, True],
                           [("level", np.array([1.0, 0.0])), ("slope", np.array([0.0, 1.0]))]))
        else:
            blocks.append((np.eye(1), [_variance("level_var", level_var, stochastic_level)],
                           [True], [("level", np.array([1.0]))]))
    elif level_var is not None or slope_var is not None:
        raise ValueError("level_var/slope_var given for a model without a level")
    if seasonal is not None:
        s = _check_int(seasonal, "seasonal", 2)
        n = s - 1
        A = np.zeros((n, n))
        A[0] = -1.0
        A[1:, :-1] += np.eye(n - 1)
        slots = [_variance("seasonal_var", seasonal_var, stochastic_seasonal)]
        slots += [["seasonal_var (fixed)", 0.0]] * (n - 1)
        w = np.zeros(n)
        w[0] = 1.0
        blocks.append((A, slots, [True] * n, [("seasonal", w)]))
    elif seasonal_var is not None:
        raise ValueError("seasonal_var given without seasonal=")
    specs = _freq_specs(freq_seasonal, stochastic_freq_seasonal, freq_seasonal_var)
    if not specs and freq_seasonal_var is not None:
        raise ValueError("freq_seasonal_var given without freq_seasonal=")
    for i, (period, h, stoch, var) in enumerate(specs):
        suffix = "" if len(specs) == 1 else f".{i}"
        A = np.zeros((2 * h, 2 * h))
        w = np.zeros(2 * h)
        for j in range(h):
            A[2 * j: 2 * j + 2, 2 * j: 2 * j + 2] = _rotation(2.0 * math.pi * (j + 1) / period)
            w[2 * j] = 1.0
        slot = _variance(f"freq_seasonal_var{suffix}", var, stoch)
        blocks.append((A, [list(slot) for _ in range(2 * h)], [True] * (2 * h),
                       [(f"freq_seasonal{suffix}", w)]))
    if cycle:
        if cycle_period is None:
            raise ValueError(
                "cycle=True needs cycle_period= (its length in steps): estimating the period "
                "is not implemented (the likelihood is multimodal in the frequency; fit a few "
                "periods and compare); the damping (cycle_damping=None) and the variance are "
                "estimated")
        period = rho = None
        try:
            if cycle_period is not None:
                period = float(cycle_period)
            if cycle_damping is not None:
                rho = float(cycle_damping)
        except (TypeError, ValueError):
            raise ValueError("cycle_period and cycle_damping must be numbers or None") from None
        if period is not None and not (math.isfinite(period) and period >= 2.0):
            raise ValueError(f"cycle_period must be a number >= 2, got {cycle_period!r}")
        if rho is not None and not (0.0 < rho <= 1.0):
            raise ValueError(f"cycle_damping must lie in (0, 1] or be None, got "
                             f"{cycle_damping!r}")
        slot = _variance("cycle_var", cycle_var, stochastic_cycle)
        # a placeholder (period 4, damping 1) where the period or damping is estimated
        A = (1.0 if rho is None else rho) * _rotation(
            2.0 * math.pi / (4.0 if period is None else period))
        dynamics.append(("cycle", len(blocks), period, rho))
        blocks.append((A, [list(slot), list(slot)], [True, True],
                       [("cycle", np.array([1.0, 0.0]))]))
    elif cycle_var is not None or cycle_period is not None:
        raise ValueError("cycle_var/cycle_period given without cycle=True")
    if autoregressive is not None:
        p = _check_int(autoregressive, "autoregressive", 1)
        A = np.zeros((p, p))
        A[1:, :-1] += np.eye(p - 1)
        coef = None
        if ar_coef is not None:
            phi = np.atleast_1d(np.asarray(ar_coef, dtype=float))
            if phi.shape != (p,) or not np.isfinite(phi).all():
                raise ValueError(f"ar_coef must hold {p} finite numbers, got {ar_coef!r}")
            A[0] = phi
            if np.abs(np.linalg.eigvals(A)).max() >= 1.0:
                raise ValueError(f"ar_coef {phi.tolist()} is not stationary (a root on or "
                                 "inside the unit circle): the AR component starts from its "
                                 "stationary distribution")
            coef = phi.tolist()
        dynamics.append(("ar", len(blocks), p, coef))
        slots = [_variance("ar_var", ar_var, True)] + [["ar_var (fixed)", 0.0]] * (p - 1)
        w = np.zeros(p)
        w[0] = 1.0
        blocks.append((A, slots, [False] * p, [("autoregressive", w)]))
    elif ar_var is not None or ar_coef is not None:
        raise ValueError("ar_var/ar_coef given without autoregressive=p")
    if not blocks:
        raise ValueError("a structural model needs at least one component besides the "
                         "irregular (level, seasonal, freq_seasonal, cycle or autoregressive)")
    S = sum(len(b[2]) for b in blocks)
    A = np.zeros((S, S))
    C = np.zeros(S)
    tvars, diffuse, components = [], [], []
    offsets = np.cumsum([0] + [len(b[2]) for b in blocks]).tolist()
    dyn = [[kind, offsets[b], x, y] for kind, b, x, y in dynamics]
    i = 0
    for Ab, slots, flags, comps in blocks:
        n = len(flags)
        A[i: i + n, i: i + n] = Ab
        for name, w in comps:
            full = np.zeros(S)
            full[i: i + n] = w
            components.append([name, full.tolist()])
            if name != "slope":
                C += full
        tvars += slots
        diffuse += flags
        i += n
    return Structure(A.tolist(), [C.tolist()], tvars, [_variance("obs_var", obs_var, True)],
                     diffuse, components, dyn)


def free_dynamics(dynamics: list) -> list[tuple[str, int]]:
    """``(name, size)`` of each estimated transition parameter: ``cycle_period``,
    ``cycle_damping``, ``ar_coef`` (size p)."""
    out = []
    for kind, _, x, y in dynamics:
        if kind == "cycle":
            out += [("cycle_period", 1)] if x is None else []
            out += [("cycle_damping", 1)] if y is None else []
        elif y is None:
            out.append(("ar_coef", int(x)))
    return out


def dynamics_start(dynamics: list) -> np.ndarray:
    """The unconstrained start of :func:`apply_dynamics`' ``theta``: statsmodels' start for
    data without dates (cycle frequency pi / 2, damping 1/2, AR coefficients 0)."""
    return np.zeros(sum(n for _, n in free_dynamics(dynamics)))


def _ar_from_pacf(r: torch.Tensor) -> torch.Tensor:
    """Stationary AR coefficients from partial autocorrelations in (-1, 1) (Durbin-Levinson,
    as statsmodels' ``constrain_stationary_univariate``)."""
    phi = r[:1]
    for k in range(1, r.shape[0]):
        phi = torch.cat([phi - r[k] * phi.flip(0), r[k: k + 1]])
    return phi


def apply_dynamics(A: torch.Tensor, dynamics: list, theta: torch.Tensor) -> torch.Tensor:
    """A with its estimated blocks set from the unconstrained ``theta`` (differentiable):
    cycle frequency ``pi * sigmoid(u)`` (statsmodels' bounds (0, pi) for data without dates),
    damping ``sigmoid(u)``, AR coefficients through partial autocorrelations
    ``u / sqrt(1 + u^2)`` (stationary)."""
    A = A.clone()
    k = 0
    for kind, i, x, y in dynamics:
        if kind == "cycle":
            if x is None:
                lam = math.pi * torch.sigmoid(theta[k])
                k += 1
            else:
                lam = torch.tensor(2.0 * math.pi / x, dtype=A.dtype)
            if y is None:
                rho = torch.sigmoid(theta[k])
                k += 1
            else:
                rho = torch.tensor(y, dtype=A.dtype)
            if x is None or y is None:
                c, s = rho * torch.cos(lam), rho * torch.sin(lam)
                block = torch.stack([torch.stack([c, s]), torch.stack([-s, c])])
                A = A.index_put((torch.arange(i, i + 2)[:, None], torch.arange(i, i + 2)),
                                block)
        elif y is None:
            p = int(x)
            u = theta[k: k + p]
            k += p
            A = A.index_put((torch.tensor([i]), torch.arange(i, i + p)),
                            _ar_from_pacf(u / torch.sqrt(1.0 + u * u)))
    return A


def dynamics_values(A: torch.Tensor, dynamics: list) -> list[tuple[str, torch.Tensor]]:
    """The estimated transition parameters in their natural units, read from ``A``:
    ``("cycle_damping", rho)`` and ``("ar_coef", [p])`` (the inverse of
    :func:`set_dynamics`)."""
    out = []
    for kind, i, x, y in dynamics:
        if kind == "cycle":
            if y is None:
                out.append(("cycle_damping", torch.hypot(A[i, i], A[i, i + 1])))
        elif y is None:
            out.append(("ar_coef", A[i, i: i + int(x)].clone()))
    return out


def set_dynamics(A: torch.Tensor, dynamics: list, values: list[torch.Tensor]) -> torch.Tensor:
    """A with its estimated blocks set from natural values (differentiable): a cycle's
    damping rho (its period is fixed), an AR component's coefficients (not constrained to
    be stationary: for derivatives at an estimate, not for fitting)."""
    A = A.clone()
    k = 0
    for kind, i, x, y in dynamics:
        if kind == "cycle":
            if y is None:
                lam = torch.tensor(2.0 * math.pi / x, dtype=A.dtype)
                rho = values[k]
                k += 1
                c, s = rho * torch.cos(lam), rho * torch.sin(lam)
                block = torch.stack([torch.stack([c, s]), torch.stack([-s, c])])
                A = A.index_put((torch.arange(i, i + 2)[:, None], torch.arange(i, i + 2)),
                                block)
        elif y is None:
            A = A.index_put((torch.tensor([i]), torch.arange(i, i + int(x))), values[k])
            k += 1
    return A


def stationary_cov(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``P`` with ``P = A P A' + Q``: the stationary covariance of ``z_t = A z_(t-1) + e``,
    ``e ~ N(0, Q)`` (A stable). Differentiable; solves the ``S^2`` linear system."""
    S = A.shape[0]
    eye = torch.eye(S * S, dtype=A.dtype)
    vec = torch.linalg.solve(eye - torch.kron(A, A), Q.reshape(-1))
    P = vec.reshape(S, S)
    return 0.5 * (P + P.T)


@dataclass
class Decomposition:
    """Smoothed components of a structural model (from ``LinearGaussianSSM.decompose``).

    Attributes:
        mean: component name -> ``[N, T_max]`` smoothed means ``E[c_t | x]`` (``[T]`` for one
            sequence; a pandas Series on the input's index for a pandas input).
        var: component name -> smoothed variances ``Var[c_t | x]``, shaped as ``mean``.

    The observation-equation components (all but ``slope``) plus the regression term and the
    irregular add up to the data.
    """

    mean: dict[str, Any]
    var: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return list(self.mean)

    def to_frame(self) -> pd.DataFrame:
        """One sequence's components: columns ``name`` and ``name_std`` for each component."""
        cols: dict[str, Any] = {}
        index = None
        for name in self.mean:
            m, v = self.mean[name], self.var[name]
            if isinstance(m, pd.Series):
                index = m.index
            m = np.asarray(m, dtype=float)
            if m.ndim != 1:
                raise ValueError("to_frame needs the decomposition of one sequence")
            cols[name] = m
            cols[f"{name}_std"] = np.sqrt(np.asarray(v, dtype=float))
        return pd.DataFrame(cols, index=index)
