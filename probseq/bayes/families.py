"""From one draw of a family's ``pyro_model`` sample sites to a fitted model of that family.

Each family's ``pyro_model`` samples its parameters in a parametrisation that suits MCMC
(partial autocorrelations, scales, free variances). A posterior draw is turned into the
family's public parameters (the names of its ``params``) once, at fit time; those are the
draws :class:`~probseq.bayes.BayesianModel` keeps and saves, and a fitted model of the family
at each draw (a *member*) is built from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from probseq.arima.model import ARIMA
from probseq.autoregressive import vector
from probseq.autoregressive.likelihood import torch_coef_from_pacf
from probseq.autoregressive.model import AutoRegressive
from probseq.autoregressive.var_model import VectorAutoRegressive
from probseq.base import SequenceModel
from probseq.data import Sequences
from probseq.hmm.model import HiddenMarkovModel
from probseq.lgssm.model import LinearGaussianSSM
from probseq.markov.model import MarkovChain
from probseq.switching import inference as sw
from probseq.switching.model import SwitchingAutoRegressive

__all__ = ["params_from_sites", "build_member", "supported_families", "fast_pyro_function",
           "local_level_diffuse_log_prob"]

#: the longest differenced series the dense local level likelihood takes (O(T^3)).
DENSE_MAX_STEPS = 600

Sites = dict[str, torch.Tensor]
Params = dict[str, torch.Tensor]


def _ar_params(model: AutoRegressive, sites: Sites, seqs: Sequences) -> Params:
    coef = (torch_coef_from_pacf(sites["pacf"]) if model.order
            else torch.zeros(0, dtype=torch.float64))
    return {"intercept": sites["mean"] * (1.0 - coef.sum()), "coef": coef,
            "noise_var": sites["noise_var"]}


def _var_params(model: VectorAutoRegressive, sites: Sites, seqs: Sequences) -> Params:
    p = vector.params_from_free(sites["mean"].to(torch.float64), sites.get("pacf_free"),
                                sites["noise_scale"].to(torch.float64),
                                sites.get("noise_corr_chol"))
    return {k: p[k] for k in ("intercept", "coef", "noise_cov")}


def _arima_params(model: ARIMA, sites: Sites, seqs: Sequences) -> Params:
    return model.params_from_pacf(sites)


def _markov_params(model: MarkovChain, sites: Sites, seqs: Sequences) -> Params:
    return {"initial": sites["initial"], "transition": sites["transition"]}


def _hmm_params(model: HiddenMarkovModel, sites: Sites, seqs: Sequences) -> Params:
    out = {"initial": sites["initial"], "transition": sites["transition"]}
    if model.emission == "categorical":
        out["emission"] = sites["emission"]
    elif model.emission == "poisson":
        out["rates"] = sites["rates"]
    else:
        scales = sites["scales"]
        if "corr_chol" in sites:
            chol = scales[..., None] * sites["corr_chol"]
            cov = chol @ chol.transpose(-1, -2)
        else:
            cov = torch.diag_embed(scales**2)
        out["means"], out["covariances"] = sites["means"], cov
        if seqs.dim is None:
            out["means"], out["covariances"] = sites["means"][:, 0], cov[:, 0, 0]
    return out


def _switching_params(model: SwitchingAutoRegressive, sites: Sites,
                      seqs: Sequences) -> Params:
    coef = sw.pacf_to_coef(sites["pacf"])
    var = sites["noise_var"]
    name = "means" if model.switching == "mean" else "intercept"
    return {"transition": sites["transition"], name: sites[name],
            "coef": coef if model.switching_ar else coef[0],
            "noise_var": var if model.switching_variance else var[0]}


def _lgssm_params(model: LinearGaussianSSM, sites: Sites, seqs: Sequences) -> Params:
    if model.structure is not None:
        return model.params_from_variances(sites, seqs)
    return dict(model.params, transition_cov=torch.diag(sites["transition_var"]),
                observation_cov=torch.diag(sites["observation_var"]))


def _from_params(model: SequenceModel, params: Params, seqs: Sequences | None) -> SequenceModel:
    return type(model).from_params(**params)


def _hmm_member(model: HiddenMarkovModel, params: Params, seqs: Sequences | None
                ) -> SequenceModel:
    extra = {}
    if model.emission == "gaussian":
        extra = {"covariance_type": model.covariance_type, "min_covar": model.min_covar}
    return HiddenMarkovModel.from_params(**params, **extra)


def _var_member(model: VectorAutoRegressive, params: Params, seqs: Sequences | None
                ) -> SequenceModel:
    member = VectorAutoRegressive.from_params(**params)
    if seqs is not None and seqs.dim is None:  # fitted to 1-D series: answers in 1-D
        member._load_state(member.params, {"univariate": True})
    return member


def _arima_member(model: ARIMA, params: Params, seqs: Sequences | None) -> SequenceModel:
    return ARIMA.from_params(order=model.order, seasonal_order=model.seasonal_order, **params)


def _lgssm_member(model: LinearGaussianSSM, params: Params, seqs: Sequences | None
                  ) -> SequenceModel:
    member = LinearGaussianSSM(**model.get_config())
    member._load_state(params, {})
    return member


_FAMILIES: list[tuple[type, Callable, Callable]] = [
    (AutoRegressive, _ar_params, _from_params),
    (VectorAutoRegressive, _var_params, _var_member),
    (ARIMA, _arima_params, _arima_member),
    (MarkovChain, _markov_params, _from_params),
    (HiddenMarkovModel, _hmm_params, _hmm_member),
    (SwitchingAutoRegressive, _switching_params, _from_params),
    (LinearGaussianSSM, _lgssm_params, _lgssm_member),
]


def supported_families() -> list[str]:
    """The model classes whose posterior :class:`~probseq.bayes.BayesianModel` can wrap."""
    return [cls.__name__ for cls, _, _ in _FAMILIES]


def _entry(model: SequenceModel) -> tuple[type, Callable, Callable]:
    for entry in _FAMILIES:
        if type(model) is entry[0]:
            return entry
    raise ValueError(
        f"BayesianModel cannot wrap a {type(model).__name__}: it needs a model with a "
        f"pyro_model whose draws it can turn into parameters ({', '.join(supported_families())})"
    )


def params_from_sites(model: SequenceModel, sites: Sites, seqs: Sequences) -> Params:
    """The family's parameters (``params`` names) of one draw of its Pyro sample sites.

    Args:
        model: the wrapped (template) model.
        sites: one draw: site name -> value (no draw axis).
        seqs: the data the posterior was fitted to (data-dependent parts of a prior).
    """
    params = _entry(model)[1](model, sites, seqs)
    return {k: v.detach().to(torch.float64) for k, v in params.items()}


def build_member(model: SequenceModel, params: Params,
                 seqs: Sequences | None = None) -> SequenceModel:
    """A fitted model of the wrapped family at one draw's parameters (``seqs``: the data the
    posterior was fitted to, where the family's answers depend on their shape)."""
    return _entry(model)[2](model, params, seqs)


def check_supported(model: Any) -> None:
    """Refuse a model that cannot be wrapped, naming the ones that can."""
    if not isinstance(model, SequenceModel) or not hasattr(model, "pyro_model"):
        raise ValueError(
            f"BayesianModel wraps a probseq model with a pyro_model "
            f"({', '.join(supported_families())}); got {type(model).__name__}")
    _entry(model)


def local_level_diffuse_log_prob(diffs: torch.Tensor, level_var: torch.Tensor,
                                 obs_var: torch.Tensor) -> torch.Tensor:
    """``log p(x_2..x_T | x_1)`` of the local level under its exact diffuse start.

    The first differences ``d_t = x_t - x_(t-1) = eta_t + eps_t - eps_(t-1)`` do not depend on
    the level: ``d ~ N(0, Sigma)`` with Sigma tridiagonal, ``level_var + 2 obs_var`` on the
    diagonal and ``-obs_var`` beside it (an MA(1)). The map ``(x_1, d) -> x`` has Jacobian 1,
    so this is the diffuse conditional density that :class:`LinearGaussianSSM` computes with
    the Kalman filter, in one dense Cholesky factorisation (differentiable, fast for Pyro).

    Args:
        diffs: ``[T - 1]`` first differences of one sequence.
        level_var, obs_var: 0-d tensors.

    Returns:
        A 0-d tensor.
    """
    n = diffs.shape[0]
    if n == 0:
        return torch.zeros((), dtype=torch.float64)
    off = torch.diag(obs_var.expand(n - 1), 1)
    cov = torch.diag((level_var + 2.0 * obs_var).expand(n)) - off - off.T
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, diffs[:, None], upper=False)
    return (-0.5 * (n * math.log(2 * math.pi) + (z * z).sum())
            - torch.log(torch.diagonal(chol)).sum())


def _is_diffuse_local_level(model: SequenceModel, seqs: Sequences) -> bool:
    st = getattr(model, "structure", None)
    return (isinstance(model, LinearGaussianSSM) and st is not None
            and st["transition_matrix"] == [[1.0]] and st["observation_matrix"] == [[1.0]]
            and model.initialization == "diffuse" and seqs.dim is None
            and not seqs.has_missing and int(seqs.lengths.max()) - 1 <= DENSE_MAX_STEPS)


def fast_pyro_function(model: SequenceModel, seqs: Sequences,
                       priors: dict[str, Any]) -> Callable[[], None] | None:
    """A faster Pyro model with the same sites, priors and (exact) likelihood as the family's
    ``pyro_model``, or None where there is none.

    The diffuse local level (univariate, no gaps, up to ``DENSE_MAX_STEPS`` steps): the
    likelihood of :func:`local_level_diffuse_log_prob` instead of the Kalman filter (about
    20 times fewer operations to differentiate; the test suite checks both agree).

    Args:
        model: the wrapped model.
        seqs: the data.
        priors: site name -> the prior the family's ``pyro_model`` gives it (read from its
            trace).
    """
    if not _is_diffuse_local_level(model, seqs):
        return None
    fixed = {name: value for name, value in model.structure["transition_vars"]
             + model.structure["observation_vars"] if value is not None}
    names = [n for n in ("level_var", "obs_var") if n not in fixed]
    diffs = [torch.diff(seqs[i].to(torch.float64)) for i in range(len(seqs))]

    def fn() -> None:
        import pyro

        values = {n: pyro.sample(n, priors[n]) for n in names}
        values.update({n: torch.tensor(v, dtype=torch.float64) for n, v in fixed.items()})
        q, r = values["level_var"].to(torch.float64), values["obs_var"].to(torch.float64)
        pyro.factor("log_lik", sum(local_level_diffuse_log_prob(d, q, r) for d in diffs))

    return fn
