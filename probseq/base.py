"""The protocol every probseq model implements.

Shape letters, used in every docstring of the package:

* ``N``: number of sequences in a batch;
* ``T``: number of time steps (``T_max`` the longest in a ragged batch);
* ``K``: number of hidden states (HMM) or mixture components;
* ``S``: dimension of a continuous latent state (state-space models);
* ``D``: dimension of a continuous observation;
* ``V``: number of symbols of a discrete alphabet (symbols are ``0..V-1``).

A model is fitted with :meth:`SequenceModel.fit`, scored with :meth:`~SequenceModel.log_prob`
(the joint log density of each whole sequence, latent states marginalised, in nats) and
:meth:`~SequenceModel.log_prob_steps` (the per-step conditionals ``log p(x_t | x_<t)``), and
sampled with :meth:`~SequenceModel.sample`. Data is validated once, here, on the way in.
"""

from __future__ import annotations

import abc
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from probseq import distributed
from probseq._utils import seeded
from probseq.data import DataKind, Sequences, as_exog, as_sequences, check_sequences

if TYPE_CHECKING:
    from probseq.forecast import Forecast

__all__ = ["SequenceModel", "NotFittedError", "load"]

_FORMAT = "probseq-model"
_FORMAT_VERSION = 1


class NotFittedError(ValueError):
    """A model was used before ``fit`` (or ``from_params``)."""


class SequenceModel(abc.ABC):
    """Base class: validation, the public protocol, save and load.

    Subclasses set ``data_kind`` and implement ``_fit``, ``_log_prob_steps`` (and optionally
    ``_log_prob``), ``_sample``, ``num_params``, ``get_config``, ``_state_tensors`` and
    ``_load_state``.

    Capabilities are declared once, on the class, and read by the shared code (refusals name
    the models that have the capability):

    * ``supports_missing``: the hooks receive batches with missing values
      (:attr:`Sequences.observed`) and marginalise them exactly; otherwise data with gaps
      is refused.
    * ``supports_exog``: the hooks ``_fit``, ``_log_prob_steps``, ``_log_prob``,
      ``_sample`` (and the forecast hooks) take the keyword ``exog``, a float64 tensor
      ``[N, T_max, E]`` aligned with the data (``[N, length, E]`` in ``_sample``), passed
      only when the caller gave covariates; otherwise ``exog=`` is refused.
    * ``num_diffuse_steps``: the initial steps the model cannot score properly (diffuse
      initial states); :func:`probseq.compare` conditions every model on them.

    Attributes:
        data_kind: ``"discrete"`` (symbols ``0..V-1``), ``"count"`` (non-negative integers)
            or ``"continuous"`` (reals).
        exact_likelihood: True where ``log_prob`` is exact, False where it is a bound.
        num_symbols: V for discrete models (``None`` until known).
    """

    data_kind: ClassVar[DataKind]
    exact_likelihood: ClassVar[bool] = True
    supports_missing: ClassVar[bool] = False
    supports_exog: ClassVar[bool] = False
    #: initial steps the model cannot score properly (diffuse initial states).
    num_diffuse_steps: int = 0
    _registry: ClassVar[dict[str, type[SequenceModel]]] = {}

    num_symbols: int | None = None
    #: observation dimension: None means univariate only, an int D, "any" before fit.
    _obs_dim: int | None | Literal["any"] = "any"
    #: the shortest sequence the model can score.
    min_length: int = 1
    #: the names of ``params`` whose every entry is a free parameter, in the order
    #: :meth:`summary` lists them (None: the family has no ``summary`` yet).
    summary_params: ClassVar[tuple[str, ...] | None] = None
    #: False where ``_step_predictive`` is an approximation (its log density is then not
    #: ``log_prob_steps``).
    step_predictive_exact: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            SequenceModel._registry[cls.__name__] = cls
        # the latent-state outputs of a family leave as pandas too (one way out, here)
        for method in _STATE_OUTPUTS:
            fn = cls.__dict__.get(method)
            if fn is not None and not getattr(fn, "_pandas_out", False):
                setattr(cls, method, _with_pandas_out(fn, method))

    # ---------------------------------------------------------------- subclass interface
    @abc.abstractmethod
    def _fit(self, seqs: Sequences, **options: Any) -> None:
        """Estimate the parameters from a validated batch."""

    @abc.abstractmethod
    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        """``[N, T_max]`` float64 per-step conditionals, zero at padded steps."""

    def _log_prob(self, seqs: Sequences, **exog: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 joint log density; by default the sum of the steps."""
        return self._log_prob_steps(seqs, **exog).sum(-1)

    @abc.abstractmethod
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        """``[num_sequences, length]`` (or ``[..., D]``) samples that begin with ``prefix``."""

    @property
    @abc.abstractmethod
    def num_params(self) -> int:
        """The number of free parameters (for AIC/BIC)."""

    @abc.abstractmethod
    def _is_fitted(self) -> bool: ...

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The constructor keywords (JSON-serialisable) that rebuild an unfitted copy."""

    @abc.abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Every fitted tensor, by name."""

    @abc.abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what ``_state_tensors`` and ``_meta`` returned."""

    def _meta(self) -> dict[str, Any]:
        """Fitted facts that are not tensors (JSON-serialisable); saved beside the tensors."""
        return {}

    # ---------------------------------------------------------------- validation
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def num_exog(self) -> int:
        """E, the number of covariates the fitted model uses (0: fitted without ``exog``)."""
        return 0

    @property
    def score_kind(self) -> str:
        """What ``log_prob`` is: ``"exact"``, or ``"bound"`` (a lower bound)."""
        return "exact" if self.exact_likelihood else "bound"

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                f"this {self.name} is not fitted yet; call fit(data) first"
                + (" or build it with from_params(...)" if hasattr(self, "from_params") else "")
            )

    def _coerce(self, data: Any, *, fitting: bool = False) -> tuple[Sequences, bool]:
        """Validate data for this model: kind, symbols, dimension, length and gaps."""
        try:
            seqs, single = as_sequences(data, self.data_kind)
        except ValueError as err:
            raise ValueError(self._hint(str(err))) from None
        check_sequences(
            seqs,
            model=self.name,
            num_symbols=None if fitting else self.num_symbols,
            dim="any" if fitting else self._obs_dim,
            min_length=self.min_length,
        )
        if seqs.has_missing and not self.supports_missing:
            i, t = (int(v) for v in torch.nonzero(~seqs.step_observed & seqs.mask)[0])
            raise ValueError(
                f"sequence {i} has a missing value at step {t}; {self.name} cannot "
                "marginalise missing values. Models that can: "
                + _capable("supports_missing")
            )
        return seqs, single

    def _hint(self, message: str) -> str:
        """Point a 'floats where symbols are expected' error at the likely fix."""
        if self.data_kind in ("discrete", "count") and "symbols are expected" in message:
            params = inspect.signature(type(self)).parameters
            fix = (
                f'{self.name}(..., emission="gaussian") models real values'
                if "emission" in params
                else "real-valued data needs a continuous model (AutoRegressive, "
                "LinearGaussianSSM, HiddenMarkovModel(emission=\"gaussian\"), ...)"
            )
            return f"{message}. {self.name} models symbols: if the data are real values, {fix}"
        return message

    def _coerce_exog(
        self, exog: Any, seqs: Sequences, data: Any = None, extra_steps: int = 0,
        fitting: bool = False,
    ) -> torch.Tensor | None:
        """``exog`` as a float64 tensor ``[N, T_max + extra_steps, E]``, or None."""
        if exog is None:
            return None
        if not self.supports_exog:
            raise ValueError(
                f"{self.name} does not take covariates (exog=); models that do: "
                + _capable("supports_exog")
            )
        if not fitting and self.num_exog == 0:
            raise ValueError(
                f"this {self.name} was fitted without covariates, so it cannot use exog=; "
                "drop exog=, or refit it with fit(data, exog=...)"
            )
        return as_exog(exog, seqs, data=data, extra_steps=extra_steps)

    def _forecast_exog(self, exog: Any, seqs: Sequences, data: Any,
                       horizon: int) -> torch.Tensor | None:
        """Covariates of the history and the H future steps ``[N, T_max + H, E]``, from
        ``exog`` holding both, or the future rows alone (the history's then come from the
        fit, which must have been on this same data)."""
        from probseq.forecast import future_exog

        if exog is None:
            return None
        future = future_exog(exog, data, seqs, horizon) if self.supports_exog else None
        if future is None:
            return self._coerce_exog(exog, seqs, data, extra_steps=horizon)
        future = self._coerce_exog(future, Sequences(torch.zeros(len(seqs), horizon),
                                                     torch.full((len(seqs),), horizon)))
        fitted = getattr(self, "_fit_exog", None)
        if fitted is None or not _same_sequences(fitted[0], seqs):
            raise ValueError(
                f"exog holds only the {horizon} future rows, so the history's covariates must "
                "come from the fit, but this model "
                + ("was not fitted with exog= in this session" if fitted is None else
                   "was fitted on other data than the data to forecast from")
                + "; pass the covariates of the history and the future together")
        hist = fitted[1][:, : seqs.max_length]
        if hist.shape[-1] != future.shape[-1]:
            raise ValueError(f"exog has {future.shape[-1]} covariates, the model was fitted "
                             f"with {hist.shape[-1]}")
        out = torch.zeros(len(seqs), seqs.max_length + horizon, hist.shape[-1],
                          dtype=torch.float64)
        for i, t in enumerate(seqs.lengths.tolist()):
            out[i, :t] = hist[i, :t]
            out[i, t: t + horizon] = future[i]
        return out

    def _check_options(self, options: dict[str, Any]) -> None:
        """Refuse unknown ``fit`` keywords, listing the valid ones."""
        params = inspect.signature(self._fit).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        valid = [
            n for n, p in params.items()
            if n not in ("seqs", "exog") and p.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.name}.fit got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(valid) if valid else 'none'}"
            )

    def _fit_num_symbols(self, seqs: Sequences) -> int:
        """V for a fit: the constructor's ``num_symbols``, checked, or inferred from data."""
        observed = int(seqs.values.max()) + 1  # padding is stored as 0
        if self.num_symbols is None:
            return observed
        check_sequences(seqs, model=self.name, num_symbols=self.num_symbols)
        return self.num_symbols

    def _fit_obs_dim(self, seqs: Sequences, univariate_only: bool = False) -> int | None:
        """The observation dimension a continuous fit will use (None: univariate)."""
        if univariate_only:
            check_sequences(seqs, model=self.name, dim=None)
        elif self._obs_dim != "any":
            check_sequences(seqs, model=self.name, dim=self._obs_dim)
            return self._obs_dim
        return seqs.dim

    # ---------------------------------------------------------------- public protocol
    def fit(self, data: Any, *, exog: Any = None, **options: Any) -> SequenceModel:
        """Estimate parameters from data.

        Args:
            data: sequences (a ``Sequences``, a list, or one sequence).
            exog: covariates ``[N, T, E]``, ``[T, E]`` or a DataFrame aligned with the data,
                for models with ``supports_exog``.
            **options: model-specific keywords (each model's ``fit`` lists them; an unknown
                keyword raises ``ValueError`` naming the valid ones); iteratively fitted
                models take ``max_epochs``, ``batch_size``, ``learning_rate``, ``seed``,
                ``progress``. Under an active ``torch.distributed`` process group, the
                data-parallel fits split ``data`` across ranks (see
                :mod:`probseq.distributed`).

        Returns:
            self.
        """
        self._check_options(options)
        seqs, _ = self._coerce(data, fitting=True)
        ex = self._coerce_exog(exog, seqs, data, fitting=True)
        if distributed.is_active() and options.get("seed") is None:
            options["seed"] = distributed.common_seed()  # ranks must make the same choices
        with seeded(options.get("seed")):
            self._fit(seqs, **options, **_exog_kw(ex))
        # the history's covariates, for forecasts given the future rows alone
        self._fit_exog = None if ex is None else (seqs, ex)
        self._fit_data = (seqs, ex)  # for summary()
        return self

    @torch.no_grad()
    def log_prob(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Joint log density ``log p(x_1..x_T)`` of each sequence, in nats.

        Missing values are marginalised (models with ``supports_missing``).

        Args:
            data: sequences.
            exog: covariates aligned with the data (models with ``supports_exog``).

        Returns:
            ``[N]`` float64, or a 0-d tensor when one sequence was given. Under an active
            ``torch.distributed`` process group each rank scores its shard and every rank
            gets the whole result (see :mod:`probseq.distributed`).
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        ex = self._coerce_exog(exog, seqs, data)
        out = _sharded(self._log_prob, seqs, ex).to(torch.float64)
        _refuse_nan(out, self.name)
        return out[0] if single else out

    @torch.no_grad()
    def log_prob_steps(self, data: Any, *, exog: Any = None) -> torch.Tensor:
        """Per-step conditionals ``log p(x_t | x_1..x_{t-1})``.

        Args:
            data: sequences.
            exog: covariates aligned with the data (models with ``supports_exog``).

        Returns:
            ``[N, T_max]`` float64, zero at padded steps and at missing steps (``[T]`` for one
            sequence). Each row sums to ``log_prob``.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        ex = self._coerce_exog(exog, seqs, data)
        out = _sharded(self._log_prob_steps, seqs, ex, steps=True).to(torch.float64)
        keep = seqs.step_any_observed if seqs.has_missing else seqs.mask
        out = torch.where(keep, out, torch.zeros((), dtype=out.dtype))
        _refuse_nan(out, self.name)
        return to_pandas(out[0] if single else out, data, "log_prob_steps")

    @torch.no_grad()
    def sample(
        self,
        num_sequences: int,
        length: int,
        *,
        prefix: Any | None = None,
        seed: int | None = None,
        exog: Any = None,
        **options: Any,
    ) -> Sequences:
        """Ancestral samples.

        Args:
            num_sequences: N, how many sequences.
            length: T, the length of each sample, prefix included.
            prefix: one sequence that every sample continues (latent models filter on it
                first); the samples begin with it. Its missing values (models with
                ``supports_missing``) are filled with draws given the observed ones.
            seed: makes the draw reproducible.
            exog: covariates for all ``length`` steps, ``[T, E]`` (shared by the samples) or
                ``[N, T, E]`` (models with ``supports_exog``).

        Returns:
            A ``Sequences`` of N sequences of length T; for a univariate pandas ``prefix``
            whose index can be continued, a DataFrame instead, one column per sample,
            indexed by the prefix's labels and the T - len(prefix) labels after them.
        """
        self._check_fitted()
        n, length = _positive_int(num_sequences, "num_sequences"), _positive_int(length, "length")
        pre, pre_obs = self._coerce_prefix(prefix, length)
        ex = None
        if exog is not None:
            shape_ref = Sequences(torch.zeros(n, length), torch.full((n,), length))
            try:
                ex = self._coerce_exog(exog, shape_ref)
            except ValueError:
                one = self._coerce_exog(exog, shape_ref[:1])
                ex = one.expand(n, -1, -1)
        kw = _exog_kw(ex)
        if pre_obs is not None:
            kw["prefix_observed"] = pre_obs
        with seeded(seed):
            values = self._sample(n, length, pre, **options, **kw)
        out = Sequences(values.detach().cpu(), torch.full((n,), length, dtype=torch.int64))
        if _is_pandas_one(prefix):
            out._index = _continued_index(out, prefix)
        return out

    def _coerce_prefix(
        self, prefix: Any | None, length: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The prefix tensor, and its observed mask when it has gaps (else None)."""
        if prefix is None:
            return None, None
        seqs, single = self._coerce(prefix)
        if not single and len(seqs) != 1:
            raise ValueError("prefix must be one sequence")
        pre = seqs[0]
        if pre.shape[0] > length:
            raise ValueError(f"prefix has {pre.shape[0]} steps, more than length={length}")
        if not seqs.has_missing:
            return pre, None
        if "prefix_observed" not in inspect.signature(self._sample).parameters:
            raise ValueError(
                f"{self.name} cannot yet sample after a prefix with missing values; "
                "fill or drop them first"
            )
        return pre, seqs.observed[0, : pre.shape[0]]

    # ---------------------------------------------------------------- forecasts
    def _step_predictive(self, seqs: Sequences, **kwargs: Any) -> torch.distributions.Distribution:
        """Hook: the one-step predictive distribution of every step.

        The distribution of ``x_t`` given ``x_1..x_(t-1)`` at EVERY step t, batch shape
        ``[N, T_max]``, event shape ``()`` (symbols, univariate reals, counts) or ``(D,)``
        (multivariate reals). Entries at ``t >= length`` are arbitrary but finite. Symbols:
        ``Categorical(probs [N, T_max, V])``; Gaussian: ``Normal``, ``MultivariateNormal``
        or ``Independent(Normal, 1)``; mixtures: ``MixtureSameFamily`` of those; Poisson
        HMM: ``MixtureSameFamily(Categorical, Poisson)``. Densities are of the data as the
        user gave it (undo any internal standardisation). Where ``step_predictive_exact``
        is True, its ``log_prob`` at every observed step equals ``_log_prob_steps``.
        Models with covariates take ``exog [N, T_max, E]`` (passed only when given).
        Used by :meth:`predict`, the first step of :meth:`forecast`, CRPS in
        :func:`probseq.compare` and :func:`probseq.backtest`.
        """
        raise NotImplementedError(
            f"{self.name} does not provide one-step predictive distributions "
            "(_step_predictive), so it cannot forecast or predict"
        )

    def _forecast(self, seqs: Sequences, horizon: int,
                  **kwargs: Any) -> torch.distributions.Distribution | None:
        """Optional hook: exact marginal h-step predictive distributions.

        The distribution of ``x_(T_i + h)`` given the whole sequence i, for h = 1..H, batch
        shape ``[N, H]``, from the same families as :meth:`_step_predictive`. Models with
        covariates take ``exog [N, T_max + H, E]`` covering the future (passed only when
        given). Return None where no closed form applies: :meth:`forecast` then takes step
        1 from :meth:`_step_predictive` (evaluated on the data extended by one placeholder
        step) and steps 2..H from paths of ``_sample(num_samples, T_i + H, prefix=...)``.
        """
        return None

    @torch.no_grad()
    def forecast(
        self,
        data: Any,
        horizon: int,
        *,
        level: float = 0.95,
        num_samples: int | None = None,
        seed: int | None = None,
        exog: Any | None = None,
    ) -> Forecast:
        """Predictive distribution of the next ``horizon`` steps after each sequence.

        Exact where the model has closed-form h-step marginals (``Forecast.method ==
        "exact"``). Otherwise step 1 is the exact one-step predictive distribution and steps
        2..H are estimated from ``num_samples`` sampled continuations of each sequence
        (``"first step exact, then sampled"``; Monte Carlo error of a mean about
        ``std / sqrt(num_samples)``).

        Args:
            data: the observed sequences (a pandas Series/DataFrame with a
                ``DatetimeIndex``, ``PeriodIndex`` or ``RangeIndex`` gives ``Forecast.index``).
            horizon: H >= 1.
            level: coverage of the central prediction intervals, in (0, 1).
            num_samples: sampled paths per sequence; default 1000 where sampling is needed
                (H > 1 without exact marginals), none otherwise. Given explicitly, paths are
                drawn for exact forecasts too (``Forecast.samples``).
            seed: makes the sampled part reproducible.
            exog: covariates of the observed and the H future steps, or of the H future
                steps alone (``[H, E]``, ``[N, H, E]``, or a pandas object whose index
                continues the data's), for a model fitted with covariates; the history's
                are then those of the fit, which must have been on the same data.

        Returns:
            A :class:`~probseq.forecast.Forecast`; one sequence in drops the N axis.
        """
        from probseq.forecast import build_forecast, future_index

        self._check_fitted()
        h = _positive_int(horizon, "horizon")
        if isinstance(level, bool) or not isinstance(level, int | float) or not (
            0.0 < float(level) < 1.0
        ):
            raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
        if num_samples is not None:
            num_samples = _positive_int(num_samples, "num_samples")
        index = future_index(data, h)
        seqs, single = self._coerce(data)
        kw = _exog_kw(self._forecast_exog(exog, seqs, data, h))
        with seeded(seed):
            dist, n_exact, samples, exact = self._predictive_batch(seqs, h, num_samples, **kw)
        return build_forecast(dist, n_exact, samples, h, float(level),
                              discrete=self.data_kind == "discrete", single=single, index=index,
                              first_step_exact=exact)

    def _predictive_batch(
        self, seqs: Sequences, horizon: int, num_samples: int | None, **kw: Any
    ) -> tuple[torch.distributions.Distribution, int, torch.Tensor | None, bool]:
        """``(dist [N, H_exact], H_exact, samples [N, S, H(, D)] or None, first step exact)``."""
        from probseq.forecast import DEFAULT_NUM_SAMPLES

        dist = self._forecast(seqs, horizon, **kw)
        n_exact, from_hook = horizon, dist is not None
        if dist is None:
            dist, n_exact = self._next_step_predictive(seqs, **kw), 1
        samples = None
        if n_exact < horizon or num_samples is not None:
            samples = self._draw_continuations(
                seqs, horizon, num_samples or DEFAULT_NUM_SAMPLES, **kw)
        return dist, n_exact, samples, from_hook or self.step_predictive_exact

    @torch.no_grad()
    def predict(self, data: Any, *, exog: Any | None = None) -> torch.Tensor:
        """One-step-ahead point predictions of every step given its past.

        The predictive mean of ``x_t`` given ``x_1..x_(t-1)`` (for RMSE/MAE beside the
        log score); for symbols, the most probable symbol.

        Returns:
            ``[N, T_max]`` (``[N, T_max, D]`` for multivariate data), 0 at padded steps;
            one sequence in drops the N axis.
        """
        self._check_fitted()
        seqs, single = self._coerce(data)
        dist = self._step_predictive(seqs, **_exog_kw(self._coerce_exog(exog, seqs, data)))
        if isinstance(dist, torch.distributions.Categorical):
            out = dist.probs.argmax(-1)
        else:
            out = dist.mean.to(torch.float64)
        mask = seqs.mask if out.ndim == 2 else seqs.mask[..., None]
        out = torch.where(mask, out, torch.zeros((), dtype=out.dtype))
        return to_pandas(out[0] if single else out, data, "predict")

    @torch.no_grad()
    def residuals(self, data: Any, *, exog: Any | None = None,
                  kind: str = "quantile") -> torch.Tensor:
        """One-step residuals of univariate reals or counts (see :mod:`probseq.diagnostics`).

        ``kind="quantile"``: ``Phi^-1(F_t(x_t))`` with ``F_t`` the one-step predictive CDF
        given ``x_1..x_(t-1)``, independent N(0, 1) when the model is right, mixtures
        included (for a Gaussian predictive it is the standardised one-step error; counts
        get randomised quantile residuals, seeded);
        ``kind="standardized"``: ``(x_t - E[x_t | past]) / sd(x_t | past)`` (reals).

        Returns:
            ``[N, T_max]`` float64, NaN at padding, missing steps and the steps that only
            locate a diffuse initial state; one sequence in drops the N axis, a pandas
            Series in gives a Series on its index.

        Raises:
            ValueError: symbols or multivariate data.
        """
        from probseq.diagnostics import quantile_residuals

        self._check_fitted()
        seqs, single = self._coerce(data)
        out = quantile_residuals(self, seqs, self._coerce_exog(exog, seqs, data), kind)
        return to_pandas(out[0] if single else out, data, "residuals")

    def residual_diagnostics(self, data: Any, *, exog: Any | None = None,
                             lags: int | None = None) -> Any:
        """Ljung-Box tests of the quantile residuals (:meth:`residuals`) at lags 1..lags,
        pooled over sequences (:func:`probseq.diagnostics.ljung_box`), with a Jarque-Bera
        test of their normality.

        Returns:
            A DataFrame indexed by lag with ``lb_stat``, ``lb_pvalue`` and ``df``; ``attrs``
            hold ``jarque_bera`` and ``jarque_bera_pvalue`` (scipy), ``num_residuals``.
            Small p-values say the model leaves structure in the residuals.
        """
        import numpy as np
        from scipy import stats

        from probseq.diagnostics import ljung_box, quantile_residuals

        self._check_fitted()
        seqs, _ = self._coerce(data)
        r = quantile_residuals(self, seqs, self._coerce_exog(exog, seqs, data)).numpy()
        table = ljung_box(r, lags)
        flat = r[np.isfinite(r)]
        jb = stats.jarque_bera(flat)
        table.attrs.update(jarque_bera=float(jb.statistic),
                           jarque_bera_pvalue=float(jb.pvalue), num_residuals=int(flat.size))
        return table

    def _extended(self, seqs: Sequences) -> Sequences:
        """Each sequence extended by one placeholder step (zero: only x_<t is read)."""
        pad = torch.zeros((len(seqs), 1, *seqs.values.shape[2:]), dtype=seqs.values.dtype)
        values = torch.cat([seqs.values, pad], dim=1)
        lengths = seqs.lengths + 1
        observed = None
        if seqs.has_missing:
            observed = torch.cat([seqs.observed, torch.ones_like(pad, dtype=torch.bool)], dim=1)
            observed[torch.arange(len(seqs)), seqs.lengths] = True
        return Sequences(values, lengths, observed)

    def _next_step_predictive(self, seqs: Sequences, **kw: Any) -> torch.distributions.Distribution:
        """``[N, 1]``: the exact predictive of the step after each sequence's last."""
        from probseq.forecast import take_steps

        if "exog" in kw:
            kw = {"exog": kw["exog"][:, : seqs.max_length + 1]}
        dist = self._step_predictive(self._extended(seqs), **kw)
        return take_steps(dist, seqs.lengths)

    def _draw_continuations(self, seqs: Sequences, horizon: int, num_samples: int,
                            **kw: Any) -> torch.Tensor:
        """``[N, S, H(, D)]`` sampled futures of each sequence (latent models filter first)."""
        out = []
        for i in range(len(seqs)):
            t = int(seqs.lengths[i])
            opts = {}
            if "exog" in kw:
                opts["exog"] = kw["exog"][i: i + 1, : t + horizon].expand(num_samples, -1, -1)
            if seqs.has_missing and not bool(seqs.observed[i, :t].all()):
                if "prefix_observed" not in inspect.signature(self._sample).parameters:
                    raise ValueError(
                        f"sequence {i} has missing values and {self.name} cannot yet sample "
                        "after them; fill or drop them to forecast more than one step")
                opts["prefix_observed"] = seqs.observed[i, :t]
            values = self._sample(num_samples, t + horizon, seqs[i], **opts)
            out.append(values.detach().cpu()[:, t:])
        return torch.stack(out)

    # ---------------------------------------------------------------- parameter uncertainty
    def _summary_rebuild_keywords(self) -> dict[str, Any]:
        """Keywords besides the parameters that ``from_params`` needs (e.g. orders)."""
        return {}

    def _summary_parameters(self) -> dict[str, torch.Tensor]:
        """The free parameters :meth:`summary` lists, by name (default: the entries of
        ``params`` named in ``summary_params``, in that order)."""
        params = self.params
        return {k: params[k] for k in self.summary_params or () if k in params}

    def _summary_rebuild(self, values: dict[str, torch.Tensor]) -> SequenceModel:
        """A model like this one with the free parameters ``values`` (those of
        :meth:`_summary_parameters`); by default through ``from_params``."""
        return type(self).from_params(**self._summary_rebuild_keywords(),
                                      **{**self.params, **values})

    def _summary_free(self, seqs: Sequences, exog: torch.Tensor | None) -> Any:
        """The free parameters as a :class:`probseq._summary.FreeParameters` vector with the
        log-likelihood of ``seqs`` as its function. By default the blocks of
        :meth:`_summary_parameters`, rebuilt by :meth:`_summary_rebuild` (finite
        differences); a family with a differentiable likelihood overrides this."""
        from probseq._summary import Blocks

        blocks, parts = Blocks(), {}
        for k, v in self._summary_parameters().items():
            if v.dim() == 0 or v.numel() > 0:  # empty parts (an AR of order 0) have no row
                parts[k] = blocks.add(k, v)

        def log_lik(vec: torch.Tensor) -> torch.Tensor:
            model = self._summary_rebuild({k: part(vec) for k, part in parts.items()})
            return model._log_prob(seqs, **_exog_kw(exog)).sum()

        return blocks.build(log_lik, differentiable=False)

    def summary(self, data: Any = None, *, exog: Any = None, level: float = 0.95) -> Any:
        """Estimates and standard errors of the free parameters (observed information).

        The standard errors are the square roots of the diagonal of the inverse observed
        information: minus the Hessian of the exact log-likelihood of the fitting data at
        the estimates, by autograd where the family's likelihood is differentiable (HMM,
        switching AR) and otherwise by central finite differences of :meth:`log_prob`.
        Intervals are Wald intervals ``estimate +- z * std_error``. Valid where the
        estimates maximise that likelihood (an exact maximum-likelihood fit; a conditional
        least-squares fit is close to it on long series).

        A probability vector (a row of a transition matrix, an initial distribution) lists
        every entry but its largest, which is one minus the others; an entry below 1e-7 is
        on the boundary of the parameter space, held fixed, and has no standard error (NaN).
        A probability's interval is the Wald interval of its logit (standard error
        ``std_error / (p (1 - p))`` by the delta method) mapped back, so it stays inside
        (0, 1); ``std_error`` itself is on the probability scale.

        Args:
            data: the data the model was fitted on (default: the data of the last ``fit``;
                required after :func:`probseq.load`).
            exog: covariates of ``data``.
            level: coverage of the intervals.

        Returns:
            A DataFrame, one row per free parameter (``coef[0]``, ``transition[0,1]``, ...,
            indexed like ``params``), with columns ``estimate``, ``std_error``, ``ci_lower``
            and ``ci_upper``; ``attrs`` hold ``log_lik``, ``aic``, ``bic``,
            ``num_observations``, ``converged`` (the fit's optimiser, True for a closed-form
            fit), ``level`` and ``on_boundary`` (the labels held fixed).

        Raises:
            ValueError: the family has no summary yet, or no fitting data is known, or the
                observed information is not positive definite (not at a maximum).
        """
        import math

        import numpy as np
        import pandas as pd
        from scipy import stats
        from scipy.special import expit

        from probseq._summary import observed_information

        self._check_fitted()
        if self.summary_params is None:
            raise ValueError(f"{self.name} has no summary() yet")
        if not 0 < float(level) < 1:
            raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
        if data is None:
            fitted = getattr(self, "_fit_data", None)
            if fitted is None:
                raise ValueError("summary() needs the data the model was fitted on: pass "
                                 "summary(data) (a loaded model does not keep it)")
            seqs, ex = fitted
        else:
            seqs, _ = self._coerce(data)
            ex = self._coerce_exog(exog, seqs, data)
        free = self._summary_free(seqs, ex)
        theta = free.values
        with torch.no_grad():
            f0 = float(free.log_lik(torch.from_numpy(theta.copy())))
        info = observed_information(free)
        try:
            cov = np.linalg.inv(info)
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError("the observed information is not positive definite: the "
                             "estimates are not at a maximum of the likelihood") from None
        se = np.full(len(theta), np.nan)
        se[~free.fixed] = np.sqrt(np.diag(cov))
        z = float(stats.norm.ppf(0.5 + 0.5 * float(level)))
        lower, upper = theta - z * se, theta + z * se
        # A probability's interval is the Wald interval of its logit, mapped back.
        prob = free.probability & ~free.fixed
        logit = np.log(theta[prob] / (1 - theta[prob]))
        half = z * se[prob] / (theta[prob] * (1 - theta[prob]))
        lower[prob], upper[prob] = expit(logit - half), expit(logit + half)
        table = pd.DataFrame({"estimate": theta, "std_error": se, "ci_lower": lower,
                              "ci_upper": upper}, index=pd.Index(free.labels, name="parameter"))
        n = free.num_observations or (int(seqs.step_observed.sum()) if seqs.has_missing
                                      else int(seqs.lengths.sum()))
        result = getattr(self, "fit_result_", None)
        converged = True  # a closed-form fit
        if isinstance(result, dict) and "converged" in result:
            converged = bool(result["converged"])
        elif hasattr(result, "success"):  # a scipy optimiser's result
            converged = bool(result.success)
        table.attrs.update(
            log_lik=f0, aic=2 * self.num_params - 2 * f0,
            bic=self.num_params * math.log(n) - 2 * f0, num_observations=n,
            converged=converged, level=float(level),
            on_boundary=[lab for lab, f in zip(free.labels, free.fixed, strict=True) if f],
        )
        return table

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (configuration as JSON plus tensors)."""
        self._check_fitted()
        payload = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "class": self.name,
            "config": json.dumps(self.get_config()),
            "meta": json.dumps(self._meta()),
            "tensors": {k: v.detach().cpu().clone() for k, v in self._state_tensors().items()},
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"


def load(path: str | os.PathLike) -> SequenceModel:
    """Load a model written by :meth:`SequenceModel.save`.

    Never unpickles arbitrary objects (``torch.load(weights_only=True)``).

    Raises:
        ValueError: the file is missing, truncated or not a probseq model.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, foreign format...
        raise ValueError(f"{path} is not a probseq model file ({type(err).__name__})") from None
    if not (isinstance(payload, dict) and payload.get("format") == _FORMAT):
        raise ValueError(f"{path} is not a probseq model file")
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path} has unsupported format version {payload.get('format_version')}")
    cls = SequenceModel._registry.get(payload.get("class", ""))
    if cls is None:
        _import_public_models()
        cls = SequenceModel._registry.get(payload.get("class", ""))
    if cls is None:
        raise ValueError(f"{path} holds an unknown model class {payload.get('class')!r}")
    try:
        config = json.loads(payload["config"])
        meta = json.loads(payload["meta"])
        tensors = payload["tensors"]
        model = cls(**config)
        model._load_state(dict(tensors), meta)
    except (KeyError, TypeError, json.JSONDecodeError, RuntimeError) as err:
        raise ValueError(f"{path} is a damaged probseq model file: {err}") from None
    return model


def _sharded(fn, seqs: Sequences, exog: torch.Tensor | None = None,
             steps: bool = False) -> torch.Tensor:
    """``fn(seqs)``, computed shard by shard across ranks when a process group is active."""
    if not distributed.is_active():
        return fn(seqs, **_exog_kw(exog))
    idx = distributed.shard_indices(len(seqs))
    part = seqs[idx]
    empty = (0, seqs.max_length) if steps else (0,)
    if not len(part):
        local = torch.zeros(empty, dtype=torch.float64)
    else:
        local = fn(part, **_exog_kw(None if exog is None else exog[idx, : part.max_length]))
    return distributed.gather_in_order(local, len(seqs))


def exog_for(model: SequenceModel, exog: Any) -> Any:
    """The covariates a fitted model uses: ``exog``, or None for a model fitted without them
    (so that models with and without covariates can be scored side by side)."""
    return exog if getattr(model, "num_exog", 0) else None


def _exog_kw(exog: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Hooks receive ``exog`` only when covariates were given."""
    return {} if exog is None else {"exog": exog}


def _import_public_models() -> None:
    """Import every public model class (``import probseq`` imports them on first use), so
    that the registry holds them all."""
    import probseq

    for name in probseq.__all__:
        if name[0].isupper():
            getattr(probseq, name)


def _same_sequences(a: Sequences, b: Sequences) -> bool:
    """The same sequences (lengths and observed values)."""
    if len(a) != len(b) or not torch.equal(a.lengths, b.lengths) or a.values.shape != \
            b.values.shape:
        return False
    mask = a.mask if a.values.ndim == 2 else a.mask[..., None]
    va = torch.where(mask, a.values, torch.zeros((), dtype=a.values.dtype))
    vb = torch.where(mask, b.values, torch.zeros((), dtype=b.values.dtype))
    return bool(torch.equal(torch.nan_to_num(va), torch.nan_to_num(vb)))


def _capable(flag: str) -> str:
    """The public model classes with a capability flag, for refusal messages."""
    import probseq

    _import_public_models()
    names = sorted(
        name for name, cls in SequenceModel._registry.items()
        if getattr(cls, flag, False) and name in probseq.__all__
    )
    return ", ".join(names) if names else "none yet"


def _positive_int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        if hasattr(x, "__index__") and not isinstance(x, bool) and int(x) >= 1:
            return int(x)
        raise ValueError(f"{what} must be a positive integer, got {x!r}")
    return x


def _refuse_nan(out: torch.Tensor, name: str) -> None:
    if torch.isnan(out).any():
        i = int(torch.nonzero(torch.isnan(out))[0][0])
        raise FloatingPointError(
            f"{name} produced NaN for sequence {i}; the parameters may be degenerate"
        )


# ------------------------------------------------------------------ pandas out
#: the latent-state methods whose outputs leave as pandas for pandas input.
_STATE_OUTPUTS = ("filter", "smoother", "most_likely_states")


def _is_pandas_one(data: Any) -> bool:
    """One sequence given as a pandas Series or DataFrame."""
    import sys

    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.Series | pd.DataFrame)


def to_pandas(out: Any, data: Any, what: str) -> Any:
    """A per-step output ``[T]`` / ``[T, K]`` (or a ``StatePosterior``) of one pandas
    sequence as a Series / DataFrame on its index; anything else is returned unchanged.

    ``log_prob_steps``, ``predict`` (univariate) and ``most_likely_states`` give a Series
    named after the method; ``predict`` of a DataFrame gives its columns; state marginals
    ``[T, K]`` give one column per state (``state_0``, ...); a Gaussian state posterior
    gives the mean and standard deviation of each state component (``mean_0``, ``std_0``,
    ...).
    """
    if not _is_pandas_one(data):
        return out
    import pandas as pd

    index = data.index
    if isinstance(out, torch.Tensor):
        arr = out.detach().cpu().numpy()
        if arr.ndim == 1:
            return pd.Series(arr, index=index, name=what)
        if arr.ndim == 2:
            if what == "predict" and isinstance(data, pd.DataFrame):
                return pd.DataFrame(arr, index=index, columns=data.columns)
            prefix = "state_" if what in _STATE_OUTPUTS else f"{what}_"
            return pd.DataFrame(arr, index=index,
                                columns=[f"{prefix}{k}" for k in range(arr.shape[1])])
        return out
    mean, cov = getattr(out, "mean", None), getattr(out, "cov", None)
    if isinstance(mean, torch.Tensor) and isinstance(cov, torch.Tensor) and mean.ndim == 2:
        std = torch.diagonal(cov, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        cols = {}
        for k in range(mean.shape[1]):
            cols[f"mean_{k}"] = mean[:, k].numpy()
            cols[f"std_{k}"] = std[:, k].numpy()
        return pd.DataFrame(cols, index=index)
    return out


def _with_pandas_out(fn, what: str):
    import functools

    @functools.wraps(fn)
    def wrapper(self, data, *args, **kwargs):
        return to_pandas(fn(self, data, *args, **kwargs), data, what)

    wrapper._pandas_out = True
    return wrapper


def _continued_index(samples: Sequences, prefix: Any) -> Any:
    """The labels of samples that continue a pandas prefix: its index, continued for the
    steps after it (None where it cannot be continued)."""
    import warnings

    from probseq.forecast import future_index

    extra = samples.max_length - len(prefix)
    if extra <= 0:
        return prefix.index[: samples.max_length]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        future = future_index(prefix, extra)
    return None if future is None else prefix.index.append(future)
