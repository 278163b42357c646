"""Posteriors over a model's parameters, scored, compared and forecast like any model.

The estimator (S posterior draws ``theta_s`` of the wrapped family, ``L_s(t) = log p(x_t |
x_<t, theta_s)`` each draw's one-step log densities):

* A new sequence x (not an extension of the fitted data) is scored by its posterior
  predictive ``log p(x | D) ~= log (1/S) sum_s p(x | theta_s)``. Its chain-rule steps weigh
  each draw by its likelihood of the sequence's own earlier steps,
  ``log p(x_t | x_<t, D) ~= logsumexp_s(C_s(t)) - logsumexp_s(C_s(t-1))`` with
  ``C_s(t) = sum_{u <= t} L_s(u)`` (``C_s(-1) = -log S``): the steps sum exactly to the
  total.
* A sequence that extends a fitted sequence y_1..y_k (a held-out tail) is scored after step
  k by leave-future-out (Buerkner, Gabry and Vehtari 2020): the draws come from
  ``p(theta | y_1..y_k)``, so the posterior given ``y_1..y_(t-1)`` is reached by importance
  ratios ``r_s = exp(sum_{u=i*}^{t-1} L_s(u))`` (i* = k), Pareto-smoothed
  (:func:`~probseq.bayes.psis.psis`); where their ``k_hat`` exceeds ``lfo_threshold``
  (0.7) the posterior is refitted on ``y_1..y_(t-1)`` and i* moves to t. The fitted data are
  thus never counted twice. Its first k steps are scored in-sample as above.
* Forecasts mix each draw's exact h-step marginals with the same weights.

Monte Carlo error: the S draws are split into B contiguous batches (chains in order), the
score is recomputed from each batch's draws alone, and ``sd / sqrt(B)`` of the batch
totals is the standard error of the full score (batch means: honest under autocorrelated
MCMC draws).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from probseq._utils import seeded, show_progress
from probseq.base import SequenceModel
from probseq.bayes import families
from probseq.bayes.priors import PriorOverride, check_prior, prior_from_json, prior_to_json
from probseq.bayes.psis import psis
from probseq.data import Sequences

__all__ = ["BayesianModel", "MONTE_CARLO"]

#: ``score_kind`` of a posterior predictive estimated from posterior draws.
MONTE_CARLO = "monte carlo"
_METHODS = ("nuts", "svi")
_NUM_BATCHES = 10
_LOW_ESS = 100


class BayesianModel(SequenceModel):
    """The posterior of a model's parameters, used as a model (posterior predictive).

    Generative process (``model`` a family with a ``pyro_model``)::

        theta ~ prior                       # the family's documented priors, or ``prior``
        for each sequence:  x ~ model(theta)

    ``fit`` draws ``theta`` from its posterior given the data (NUTS over the likelihood
    with latent states marginalised, or SVI with an ``AutoMultivariateNormal`` guide).
    ``log_prob`` is the posterior predictive ``log (1/S) sum_s p(x | theta_s)``,
    ``log_prob_steps`` its chain-rule steps, ``forecast`` mixes the draws' exact forecasts.
    A held-out continuation of a fitted sequence is scored by leave-future-out with
    Pareto-smoothed importance weights and refits (see the module docstring), so the fitted
    steps are never counted twice.

    Args:
        model: the family, unfitted or fitted (``AutoRegressive``, ``VectorAutoRegressive``,
            ``ARIMA`` (seasonal too; no covariates), ``MarkovChain`` of order 1,
            ``HiddenMarkovModel``, ``SwitchingAutoRegressive`` (univariate),
            ``LinearGaussianSSM`` structured, e.g. ``local_level()``, or fitted).
        method: ``"nuts"`` or ``"svi"``.
        num_samples: posterior draws per chain (SVI: draws from the fitted guide).
        warmup_steps: NUTS adaptation steps per chain (discarded).
        num_chains: NUTS chains, run one after the other (for R-hat).
        prior: site name -> Pyro distribution, replacing the family's default prior of that
            site (see each family's ``pyro_model`` for the names).
        lfo_threshold: the Pareto ``k_hat`` above which leave-future-out refits (0.7;
            ``inf`` never refits, ``-inf`` refits at every held-out step after the first).

    Attributes:
        draws: site-free posterior draws in the family's parameter names,
            ``name -> [S, ...]`` (S = num_chains * num_samples).
        lfo_refits: the refits of the last leave-future-out scoring (sequence, step,
            k_hat).
    """

    exact_likelihood: ClassVar[bool] = False

    def __init__(self, model: SequenceModel | dict[str, Any], method: str = "nuts",
                 num_samples: int = 500, warmup_steps: int = 300, num_chains: int = 1,
                 prior: dict[str, Any] | None = None, lfo_threshold: float = 0.7):
        if isinstance(model, dict):  # the saved description (load)
            cls = SequenceModel._registry.get(model.get("class", ""))
            if cls is None:
                raise ValueError(f"unknown model class {model.get('class')!r}")
            model = cls(**model["config"])
        families.check_supported(model)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        for name, v in (("num_samples", num_samples), ("warmup_steps", warmup_steps),
                        ("num_chains", num_chains)):
            low = 0 if name == "warmup_steps" else 1
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if not (isinstance(lfo_threshold, int | float) and not math.isnan(lfo_threshold)):
            raise ValueError(f"lfo_threshold must be a number (inf: never refit, -inf: refit "
                             f"at every held-out step), got {lfo_threshold!r}")
        if isinstance(prior, dict) and prior and all(isinstance(v, dict)
                                                     for v in prior.values()):
            prior = prior_from_json(prior)
        self.model = model
        self.method = method
        self.num_samples = int(num_samples)
        self.warmup_steps = int(warmup_steps)
        self.num_chains = int(num_chains)
        self.prior = check_prior(prior)
        self.lfo_threshold = float(lfo_threshold)
        self.data_kind = model.data_kind
        self.num_symbols = model.num_symbols
        self._obs_dim = model._obs_dim
        self.min_length = model.min_length
        self.draws: dict[str, torch.Tensor] | None = None
        self._sites: dict[str, torch.Tensor] = {}
        self._diverging: torch.Tensor | None = None
        self._fit_seqs: Sequences | None = None
        self._members: list[SequenceModel] | None = None
        self._cache: tuple[Any, dict[str, Any]] | None = None
        self.elbo_: list[float] = []
        self.lfo_refits: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- protocol bookkeeping
    @property
    def score_kind(self) -> str:
        """``"monte carlo"``: an estimate from posterior draws (neither exact nor a bound)."""
        return MONTE_CARLO

    @property
    def num_params(self) -> int:
        """What the wrapped family counts (its free parameters)."""
        self._check_fitted()
        return int(self.members[0].num_params)

    @property
    def num_draws(self) -> int:
        """S, the number of posterior draws."""
        self._check_fitted()
        return int(next(iter(self.draws.values())).shape[0])

    @property
    def num_diffuse_steps(self) -> int:  # type: ignore[override]
        return int(getattr(self.members[0] if self._is_fitted() else self.model,
                           "num_diffuse_steps", 0))

    def _is_fitted(self) -> bool:
        return self.draws is not None

    def get_config(self) -> dict[str, Any]:
        return {"model": {"class": self.model.name, "config": self.model.get_config()},
                "method": self.method, "num_samples": self.num_samples,
                "warmup_steps": self.warmup_steps, "num_chains": self.num_chains,
                "prior": prior_to_json(self.prior), "lfo_threshold": self.lfo_threshold}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"draw/{k}": v for k, v in self.draws.items()}
        out.update({f"site/{k}": v for k, v in self._sites.items()})
        if self._diverging is not None:
            out["diverging"] = self._diverging
        out["fit/values"] = self._fit_seqs.values
        out["fit/lengths"] = self._fit_seqs.lengths
        if self.model._is_fitted():
            out.update({f"template/{k}": v for k, v in self.model._state_tensors().items()})
        return out

    def _meta(self) -> dict[str, Any]:
        return {"template_meta": self.model._meta() if self.model._is_fitted() else None,
                "elbo": [float(v) for v in self.elbo_]}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        template = {k[9:]: v for k, v in tensors.items() if k.startswith("template/")}
        if template:
            self.model._load_state(template, meta.get("template_meta") or {})
        draws = {k[5:]: v.to(torch.float64) for k, v in tensors.items()
                 if k.startswith("draw/")}
        if not draws:
            raise KeyError("draw/*")
        self._sites = {k[5:]: v for k, v in tensors.items() if k.startswith("site/")}
        self._diverging = tensors.get("diverging")
        self._fit_seqs = Sequences(tensors["fit/values"], tensors["fit/lengths"])
        self.elbo_ = list(meta.get("elbo", []))
        self._set_draws(draws)

    def _set_draws(self, draws: dict[str, torch.Tensor]) -> None:
        self.draws = draws
        self._members = None
        self._cache = None
        first = self.members[0]
        self.num_symbols = first.num_symbols
        self._obs_dim = first._obs_dim

    @property
    def members(self) -> list[SequenceModel]:
        """The wrapped family fitted at each draw (S models), built on first use."""
        self._check_fitted()
        if self._members is None:
            s = int(next(iter(self.draws.values())).shape[0])
            self._members = [families.build_member(self.model,
                                                   {k: v[i] for k, v in self.draws.items()},
                                                   self._fit_seqs)
                             for i in range(s)]
        return self._members

    # ---------------------------------------------------------------- fitting
    def fit(self, data: Any, *, seed: int | None = None, progress: bool | None = None,
            max_epochs: int = 2000, learning_rate: float = 0.01,
            **unknown: Any) -> BayesianModel:
        """Draw the parameters from their posterior given ``data``.

        Args:
            data: sequences (fully observed; no covariates).
            seed: makes the draws reproducible.
            progress: NUTS progress bar (None: on a terminal or in a notebook).
            max_epochs: SVI optimisation steps (``method="svi"``).
            learning_rate: SVI's Adam step size.

        Returns:
            self.

        Warns:
            UserWarning: NUTS divergences, or an effective sample size below 100, naming
                the parameters.
        """
        return super().fit(data, seed=seed, progress=progress, max_epochs=max_epochs,
                           learning_rate=learning_rate, **unknown)

    def _fit(self, seqs: Sequences, *, seed: int | None = None, progress: bool | None = None,
             max_epochs: int = 2000, learning_rate: float = 0.01) -> None:
        with one_thread():
            self._fit_draws(seqs, show_progress() if progress is None else bool(progress),
                            int(max_epochs), float(learning_rate))

    def _fit_draws(self, seqs: Sequences, progress: bool, max_epochs: int,
                   learning_rate: float) -> None:
        fn = self._pyro_function(seqs)
        if self.method == "nuts":
            sites, diverging = self._run_nuts(fn, progress)
            self.elbo_ = []
        else:
            sites, diverging = self._run_svi(fn, max_epochs, learning_rate)
        c, s = next(iter(sites.values())).shape[:2]
        flat = {k: v.reshape(c * s, *v.shape[2:]) for k, v in sites.items()}
        per_draw = [families.params_from_sites(self.model, {k: v[i] for k, v in flat.items()},
                                               seqs) for i in range(c * s)]
        draws = {k: torch.stack([p[k] for p in per_draw]) for k in per_draw[0]}
        self._sites, self._diverging = sites, diverging
        self._fit_seqs = Sequences(seqs.values.clone(), seqs.lengths.clone())
        self.lfo_refits = []
        self._set_draws(draws)
        if self.method == "nuts":
            self._warn_diagnostics()

    def _pyro_function(self, seqs: Sequences):
        """A no-argument Pyro model: the family's ``pyro_model`` on ``seqs``, priors
        overridden."""
        import pyro.poutine as poutine

        with poutine.block():
            made = self.model.pyro_model(seqs)
        base = made if callable(made) else (lambda: self.model.pyro_model(seqs))
        with poutine.block():
            trace = poutine.trace(base).get_trace()
        family_priors = {n: site["fn"] for n, site in trace.nodes.items()
                         if site["type"] == "sample" and not site["is_observed"]}
        base = families.fast_pyro_function(self.model, seqs, family_priors) or base
        if not self.prior:
            return base
        override = PriorOverride(self.prior)

        def fn() -> None:
            with override:
                base()

        trace = poutine.trace(fn).get_trace()
        latent = [n for n, site in trace.nodes.items()
                  if site["type"] == "sample" and not site["is_observed"]]
        unknown = sorted(set(self.prior) - set(latent))
        if unknown:
            raise ValueError(f"prior names unknown site(s) {unknown}; {self.model.name}'s "
                             f"sites are {latent}")
        return fn

    def _run_nuts(self, fn, progress: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        from pyro.infer import MCMC, NUTS

        chains, diverging = [], []
        for _ in range(self.num_chains):
            kernel = NUTS(fn, target_accept_prob=0.8)
            mcmc = MCMC(kernel, num_samples=self.num_samples, warmup_steps=self.warmup_steps,
                        num_chains=1, disable_progbar=not progress)
            mcmc.run()
            chains.append({k: v.detach().to(torch.float64) for k, v in
                           mcmc.get_samples().items()})
            div = torch.zeros(self.num_samples, dtype=torch.bool)
            idx = mcmc.diagnostics()["divergences"]["chain 0"]
            div[torch.as_tensor(list(idx), dtype=torch.int64)] = True
            diverging.append(div)
        sites = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
        return sites, torch.stack(diverging)

    def _run_svi(self, fn, steps: int, lr: float
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        import pyro
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoMultivariateNormal

        with pyro.get_param_store().scope():
            guide = AutoMultivariateNormal(fn)
            svi = SVI(fn, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
            losses = [float(svi.step()) for _ in range(steps)]
            with torch.no_grad():
                draws = [guide() for _ in range(self.num_samples)]
        self.elbo_ = [-v for v in losses]
        sites = {k: torch.stack([d[k].detach().to(torch.float64) for d in draws])[None]
                 for k in draws[0]}
        return sites, None

    # ---------------------------------------------------------------- diagnostics
    def diagnostics(self) -> pd.DataFrame:
        """R-hat and effective sample size of every scalar parameter of every site.

        Split R-hat (Gelman et al.) and the effective sample size across chains, from
        Pyro's ``pyro.ops.stats``. A single chain is split in halves. For ``method="svi"``
        the draws are independent draws of the fitted guide: R-hat near 1 and ESS near S say
        nothing about how well the guide approximates the posterior (see ``elbo_``).

        Returns:
            A DataFrame, one row per scalar parameter (``site[i, j]``), columns ``mean``,
            ``sd``, ``r_hat``, ``ess``; ``attrs["divergences"]`` the number of divergent
            transitions (NUTS), ``attrs["num_chains"]``.
        """
        from pyro.ops.stats import effective_sample_size, split_gelman_rubin

        self._check_fitted()
        rows = []
        for name, v in self._sites.items():
            c, s = v.shape[:2]
            flat = v.reshape(c, s, -1)
            shape = v.shape[2:]
            for j in range(flat.shape[-1]):
                x = flat[..., j]
                idx = np.unravel_index(j, tuple(shape)) if shape else ()
                label = name + (f"[{', '.join(str(int(i)) for i in idx)}]" if shape else "")
                rows.append({"parameter": label, "mean": float(x.mean()),
                             "sd": float(x.std()) if x.numel() > 1 else float("nan"),
                             "r_hat": float(split_gelman_rubin(x, 0, 1)),
                             "ess": float(effective_sample_size(x, 0, 1))})
        df = pd.DataFrame(rows).set_index("parameter")
        df.attrs["divergences"] = (int(self._diverging.sum())
                                   if self._diverging is not None else 0)
        df.attrs["num_chains"] = int(next(iter(self._sites.values())).shape[0])
        df.attrs["method"] = self.method
        return df

    def _warn_diagnostics(self) -> None:
        table = self.diagnostics()
        problems = []
        if table.attrs["divergences"]:
            problems.append(f"{table.attrs['divergences']} divergent transitions")
        varies = table["sd"] > 0  # constants (a one-state chain's initial) have no ESS
        low = table.index[varies & ((table["ess"] < _LOW_ESS) | table["ess"].isna())].tolist()
        if low:
            problems.append(f"effective sample size below {_LOW_ESS} for {', '.join(low)}")
        bad = table.index[varies & (table["r_hat"] > 1.05)].tolist()
        if bad:
            problems.append(f"R-hat above 1.05 for {', '.join(bad)}")
        if problems:
            warnings.warn(f"NUTS posterior of {self.model.name}: " + "; ".join(problems)
                          + " (more warmup_steps or num_samples may help)", stacklevel=6)

    def to_inference_data(self) -> Any:
        """The draws as an ArviZ ``InferenceData`` (``posterior`` group, chains x draws;
        ``sample_stats.diverging`` for NUTS).

        Raises:
            ImportError: ArviZ is not installed (``pip install arviz``).
        """
        self._check_fitted()
        try:
            import arviz
        except ImportError:
            raise ImportError("to_inference_data needs ArviZ, which is not installed: "
                              "pip install arviz") from None
        posterior = {k: v.numpy() for k, v in self._sites.items()}
        stats = {}
        if self._diverging is not None:
            stats["diverging"] = self._diverging.numpy()
        return arviz.from_dict(posterior=posterior, sample_stats=stats or None)

    # ---------------------------------------------------------------- scores
    def _draw_steps(self, seqs: Sequences, members: list[SequenceModel] | None = None
                    ) -> torch.Tensor:
        """``[S, N, T_max]`` each draw's per-step conditionals (0 at padding)."""
        members = self.members if members is None else members
        return torch.stack([m.log_prob_steps(seqs) for m in members]).to(torch.float64)

    def _fitted_prefix(self, seqs: Sequences) -> torch.Tensor:
        """``[N]``: the length of the longest fitted sequence each sequence extends (0:
        none, or the sequence is no longer than it)."""
        fit = self._fit_seqs
        out = torch.zeros(len(seqs), dtype=torch.int64)
        for i in range(len(seqs)):
            n = int(seqs.lengths[i])
            for j in range(len(fit)):
                k = int(fit.lengths[j])
                if k < n and k > int(out[i]) and torch.equal(seqs.values[i, :k],
                                                             fit.values[j, :k]):
                    out[i] = k
        return out

    def _score(self, seqs: Sequences) -> dict[str, Any]:
        """Steps ``[N, T]``, batch steps ``[B, N, T]``, k-hats and refits (cached)."""
        key = (seqs.values.shape, seqs.values.numpy().tobytes(), seqs.lengths.numpy().tobytes())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with one_thread():
            result = self._score_uncached(seqs)
        self.lfo_refits = result["refits"]
        self._cache = (key, result)
        return result

    def _score_uncached(self, seqs: Sequences) -> dict[str, Any]:
        L = self._draw_steps(seqs)
        s, n, t_max = L.shape
        b = _NUM_BATCHES if s >= 2 * _NUM_BATCHES else 0
        batches = np.array_split(np.arange(s), b) if b else []
        prefix = self._fitted_prefix(seqs)
        steps = torch.zeros(n, t_max, dtype=torch.float64)
        batch_steps = torch.zeros(len(batches), n, t_max, dtype=torch.float64)
        khat = torch.full((n, t_max), float("nan"), dtype=torch.float64)
        refits: list[dict[str, Any]] = []
        tails: dict[int, dict[str, Any]] = {}
        for i in range(n):
            length, k = int(seqs.lengths[i]), int(prefix[i])
            head = length if k == 0 else k
            steps[i, :head] = _telescoped(L[:, i, :head])
            for j, idx in enumerate(batches):
                batch_steps[j, i, :head] = _telescoped(L[idx, i, :head])
            if k == 0:
                continue
            lfo = self._leave_future_out(seqs, i, k, L[:, i, :length], batches)
            steps[i, k:length], khat[i, k:length] = lfo["steps"], lfo["khat"]
            if batches:
                batch_steps[:, i, k:length] = lfo["batch_steps"]
            refits.extend(lfo["refits"])
            tails[i] = lfo
        return {"steps": steps, "batch_steps": batch_steps, "khat": khat, "refits": refits,
                "prefix": prefix, "L": L, "tails": tails}

    def _leave_future_out(self, seqs: Sequences, i: int, k: int, L: torch.Tensor,
                          batches: list[np.ndarray]) -> dict[str, Any]:
        """PSIS leave-future-out steps k..T-1 of sequence i, refitting where k_hat is high.

        Returns ``steps [T - k]``, ``batch_steps [B, T - k]``, ``khat [T - k]``, ``refits``,
        ``weights [S, T - k]`` (each step's log weights) and ``sets`` (per step, the index of
        its draws: 0 the fitted posterior, r > 0 the r-th refit in ``members``).
        """
        length = L.shape[1]
        out = {"steps": torch.zeros(length - k, dtype=torch.float64),
               "batch_steps": torch.zeros(len(batches), length - k, dtype=torch.float64),
               "khat": torch.full((length - k,), float("nan"), dtype=torch.float64),
               "weights": torch.zeros(L.shape[0], length - k, dtype=torch.float64),
               "sets": [0] * (length - k), "refits": [], "members": [self.members]}
        ref, cur = k, L
        for t in range(k, length):
            lw, k_hat = _lfo_weights(cur[:, ref:t])
            if k_hat > self.lfo_threshold:
                out["refits"].append({"sequence": i, "step": t, "k_hat": k_hat})
                one = Sequences(seqs.values[i : i + 1, :length].clone(),
                                torch.tensor([length]))
                with seeded(7919 * i + t):  # reproducible refits
                    members, cur = self._refit(one, t)
                out["members"].append(members)
                ref = t
                lw, k_hat = _lfo_weights(cur[:, ref:t])
            out["steps"][t - k] = torch.logsumexp(lw + cur[:, t], 0)
            out["khat"][t - k] = k_hat
            out["weights"][:, t - k] = lw
            out["sets"][t - k] = len(out["members"]) - 1
            for j, idx in enumerate(batches):
                lwb, _ = _lfo_weights(cur[idx, ref:t])
                out["batch_steps"][j, t - k] = torch.logsumexp(lwb + cur[idx, t], 0)
        return out

    def _refit(self, one: Sequences, t: int) -> tuple[list[SequenceModel], torch.Tensor]:
        """The members of a posterior refitted on the first t steps of ``one`` (same family,
        prior and sampler settings), and their per-step conditionals of ``one`` ``[S, T]``."""
        refit = BayesianModel(copy.deepcopy(self.model), **{
            k: v for k, v in self.get_config().items() if k not in ("model", "prior")},
            prior=self.prior)
        part = Sequences(one.values[:, :t].clone(), torch.tensor([t]))
        with warnings.catch_warnings(), torch.enable_grad():  # scoring runs under no_grad
            warnings.simplefilter("ignore")
            refit._fit(part)
        return refit.members, refit._draw_steps(one)[:, 0]

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        return self._score(seqs)["steps"]

    def monte_carlo_se(self, data: Any, start: int = 0) -> float:
        """The Monte Carlo standard error of the total score of ``data``'s steps
        ``t >= start`` (batch means over the draws; NaN with fewer than 20 draws)."""
        self._check_fitted()
        seqs, _ = self._coerce(data)
        res = self._score(seqs)
        b = res["batch_steps"]
        if b.shape[0] < 2:
            return float("nan")
        totals = b[:, :, start:].sum((1, 2))
        return float(totals.std(correction=1) / math.sqrt(b.shape[0]))

    def score_note(self, data: Any, start: int = 0) -> str:
        """One sentence on how ``data``'s steps ``t >= start`` were scored: Monte Carlo error,
        leave-future-out k-hats and refits."""
        self._check_fitted()
        seqs, _ = self._coerce(data)
        res = self._score(seqs)
        parts = [f"posterior predictive from {self.num_draws} {self.method.upper()} draws, "
                 f"Monte Carlo se {self.monte_carlo_se(seqs, start):.3g} nats"]
        kh = res["khat"][:, start:]
        held = sum(max(0, int(seqs.lengths[i]) - max(int(k), start))
                   for i, k in enumerate(res["prefix"]) if k > 0)
        kh = kh[~torch.isnan(kh)]  # NaN: no ratios yet (a tail's first step, just refitted)
        if held:
            top = f"{float(kh.max()):.2f}" if kh.numel() else "n/a"
            parts.append(f"leave-future-out (PSIS) on {held} held-out steps of fitted "
                         f"series, max k-hat {top}, "
                         f"{len(res['refits'])} refit(s) where k-hat > {self.lfo_threshold}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- sampling and forecasts
    def _final_log_weights(self, seqs: Sequences) -> torch.Tensor:
        """``[S, N]`` normalised log weights of the draws given each whole sequence (the
        posterior given the fitted data and the sequence's steps not already fitted)."""
        L = self._draw_steps(seqs)
        prefix = self._fitted_prefix(seqs)
        out = torch.empty(L.shape[0], len(seqs), dtype=torch.float64)
        fitted = self._fit_seqs.to_list()
        for i in range(len(seqs)):
            ref, length = int(prefix[i]), int(seqs.lengths[i])
            if ref == 0 and any(torch.equal(seqs[i], f) for f in fitted):
                ref = length  # the fitted sequence itself: nothing to add
            ratios = L[:, i, ref:length].sum(-1)
            if ref == length:
                out[:, i] = -math.log(L.shape[0])
            elif ref:
                out[:, i] = _lfo_weights(ratios[:, None])[0]
            else:
                out[:, i] = ratios - torch.logsumexp(ratios, 0)
        return out

    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Distribution:
        """The draws' one-step predictives mixed with exactly the weights (and, after a
        leave-future-out refit, the draws) of ``log_prob_steps``: its log density at every
        step is ``log_prob_steps``."""
        res = self._score(seqs)
        with one_thread():
            cum = torch.cumsum(res["L"], -1)
            prev = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], -1)
            lw = prev - torch.logsumexp(prev, 0, keepdim=True)  # [S, N, T]
            for i, tail in res["tails"].items():
                k = int(res["prefix"][i])
                lw[:, i, k : k + tail["weights"].shape[1]] = tail["weights"]
            out = _mix([m._step_predictive(seqs) for m in self.members], lw.permute(1, 2, 0))
            for i, tail in res["tails"].items():
                k = int(res["prefix"][i])
                for r in range(1, len(tail["members"])):
                    cells = torch.zeros(seqs.values.shape[:2], dtype=torch.bool)
                    steps = [k + j for j, set_ in enumerate(tail["sets"]) if set_ == r]
                    cells[i, steps] = True
                    w = lw.clone()
                    w[:, i, steps] = tail["weights"][:, [t - k for t in steps]]
                    other = _mix([m._step_predictive(seqs) for m in tail["members"][r]],
                                 w.permute(1, 2, 0))
                    out = _splice(out, other, cells)
            return out

    def _forecast(self, seqs: Sequences, horizon: int) -> torch.distributions.Distribution | None:
        """Each draw's exact h-step marginals, mixed with the draws' weights given the
        sequence (None where the family has no exact forecasts: then sampled)."""
        dists = [m._forecast(seqs, horizon) for m in self.members]
        if any(d is None for d in dists):
            return None
        lw = self._final_log_weights(seqs)  # [S, N]
        return _mix(dists, lw.T[:, None, :].expand(-1, horizon, -1))

    def forecast(self, data: Any, horizon: int, **kwargs: Any):
        """Predictive distribution of the next ``horizon`` steps, mixed over the posterior
        draws (parameter uncertainty included); see :meth:`SequenceModel.forecast`.
        ``Forecast.method`` says ``"posterior mixture over S draws (... per draw)"``."""
        fc = super().forecast(data, horizon, **kwargs)
        fc.method = f"posterior mixture over {self.num_draws} draws ({fc.method} per draw)"
        return fc

    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"BayesianModel.sample got unknown options {sorted(options)}")
        s = self.num_draws
        if prefix is None:
            probs = torch.full((s,), 1.0 / s, dtype=torch.float64)
        else:
            one = Sequences(prefix[None].clone(), torch.tensor([prefix.shape[0]]))
            probs = self._final_log_weights(one)[:, 0].exp()
        pick = torch.multinomial(probs, num_sequences, replacement=True)
        out = None
        for d in torch.unique(pick).tolist():
            rows = torch.nonzero(pick == d)[:, 0]
            vals = self.members[d]._sample(int(rows.numel()), length, prefix)
            if out is None:
                out = torch.empty((num_sequences, *vals.shape[1:]), dtype=vals.dtype)
            out[rows] = vals
        return out


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread: the tensors of an MCMC step are tiny, and on a busy
    machine extra threads only wait for each other (a 3-element op can take 10 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _telescoped(L: torch.Tensor) -> torch.Tensor:
    """``[T]`` chain-rule steps of the posterior predictive from ``[S, T]`` draw steps."""
    s = L.shape[0]
    lse = torch.logsumexp(torch.cumsum(L, -1), 0) - math.log(s)
    return torch.diff(lse, prepend=torch.zeros(1, dtype=lse.dtype))


def _splice(a: torch.distributions.Distribution, b: torch.distributions.Distribution,
            cells: torch.Tensor) -> torch.distributions.Distribution:
    """``b`` at the ``[N, T]`` cells where ``cells`` is True, ``a`` elsewhere (two outputs of
    :func:`_mix` over the same number of components)."""
    dist = torch.distributions

    def pick(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(cells.reshape(cells.shape + (1,) * (x.ndim - 2)), y, x)

    if isinstance(a, dist.Categorical):
        return dist.Categorical(probs=pick(a.probs, b.probs))
    mix = dist.Categorical(probs=pick(a.mixture_distribution.probs,
                                      b.mixture_distribution.probs))
    ca, cb = a.component_distribution, b.component_distribution
    if isinstance(ca, dist.MultivariateNormal):
        comp = dist.MultivariateNormal(pick(ca.loc, cb.loc),
                                       scale_tril=pick(ca.scale_tril, cb.scale_tril))
    elif isinstance(ca, dist.Normal):
        comp = dist.Normal(pick(ca.loc, cb.loc), pick(ca.scale, cb.scale))
    else:
        comp = dist.Poisson(pick(ca.rate, cb.rate))
    return dist.MixtureSameFamily(mix, comp)


def _lfo_weights(step_logs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """PSIS log weights ``[S]`` from ``[S, m]`` log importance factors (m steps beyond the
    reference point), and k_hat (NaN when m = 0: the weights are uniform)."""
    s = step_logs.shape[0]
    if step_logs.shape[1] == 0:
        return torch.full((s,), -math.log(s), dtype=torch.float64), float("nan")
    lw, k_hat = psis(step_logs.sum(-1).numpy())
    return torch.from_numpy(lw), k_hat


def _mix(dists: list[torch.distributions.Distribution],
         log_weights: torch.Tensor) -> torch.distributions.Distribution:
    """One distribution over ``[N, H]`` from S draws' distributions and ``[N, H, S]`` log
    weights: summed probabilities for symbols, a flattened mixture for reals and counts
    (of Normals, MultivariateNormals or Poissons, each draw's own mixtures flattened in)."""
    dist = torch.distributions
    w = log_weights.exp()
    first = dists[0]
    if isinstance(first, dist.Categorical):
        probs = sum(w[..., i, None] * d.probs for i, d in enumerate(dists))
        return dist.Categorical(probs=probs / probs.sum(-1, keepdim=True))
    comps, weights = [], []
    for i, d in enumerate(dists):
        if isinstance(d, dist.MixtureSameFamily):
            weights.append(w[..., i, None] * d.mixture_distribution.probs)
            comps.append(d.component_distribution)
        elif isinstance(d, dist.MultivariateNormal):  # one component [N, H, 1] of event D
            weights.append(w[..., i, None])
            comps.append(dist.MultivariateNormal(d.loc.unsqueeze(-2),
                                                 scale_tril=d.scale_tril.unsqueeze(-3)))
        elif isinstance(d, dist.Normal):
            weights.append(w[..., i, None])
            # an infinite scale (a diffuse, unscored step) made finite: mixture quantiles
            # bisect between loc -/+ 40 scale
            comps.append(dist.Normal(d.loc[..., None], d.scale[..., None].clamp(max=1e100)))
        elif isinstance(d, dist.Poisson):
            weights.append(w[..., i, None])
            comps.append(dist.Poisson(d.rate[..., None]))
        else:
            raise ValueError(f"cannot mix {type(d).__name__} predictives over draws")
    probs = torch.cat(weights, -1)
    if isinstance(comps[0], dist.MultivariateNormal):
        e = comps[0].event_shape[0]
        loc = torch.cat([c.loc.expand(*wt.shape, e)
                         for c, wt in zip(comps, weights, strict=True)], -2)
        tril = torch.cat([c.scale_tril.expand(*wt.shape, e, e)
                          for c, wt in zip(comps, weights, strict=True)], -3)
        comp = dist.MultivariateNormal(loc, scale_tril=tril)
    elif isinstance(comps[0], dist.Normal):
        loc = torch.cat([c.loc.expand(wt.shape) for c, wt in zip(comps, weights, strict=True)],
                        -1)
        scale = torch.cat([c.scale.expand(wt.shape)
                           for c, wt in zip(comps, weights, strict=True)], -1)
        comp = dist.Normal(loc, scale)
    elif isinstance(comps[0], dist.Poisson):
        comp = dist.Poisson(torch.cat([c.rate.expand(wt.shape)
                                       for c, wt in zip(comps, weights, strict=True)], -1))
    else:
        raise ValueError(f"cannot mix {type(comps[0]).__name__} predictives over draws")
    return dist.MixtureSameFamily(dist.Categorical(probs=probs / probs.sum(-1, keepdim=True)),
                                  comp)
