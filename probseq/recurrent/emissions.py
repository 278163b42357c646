"""Emission heads: the distribution p(x_t | x_<t) given the network's output at step t.

Each emission reads a parameter vector ``[..., P]`` (the output of the network's last linear
layer) and turns it into a distribution over one observation. These are pure tensor
functions; they never see a model object.

Continuous emissions work in the *standardised* space of the data (the model adds the
Jacobian); their covariance is diagonal, so for D > 1 the dimensions of ``x_t`` are
conditionally independent given the history (they still depend on each other through the
history, and a mixture of diagonal Gaussians captures dependence within a step).

Shapes: N sequences, T steps, D observation dimensions, V symbols, K mixture components.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F

__all__ = ["Emission", "CategoricalEmission", "GaussianEmission", "MixtureEmission",
           "MIN_SCALE"]

#: the smallest standard deviation (in standardised units) a continuous emission may use;
#: keeps densities finite when the data has repeated values.
MIN_SCALE = 1e-3

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + MIN_SCALE


def _normal_log_prob(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    z = (x - mean) / scale
    return -0.5 * z * z - torch.log(scale) - _HALF_LOG_2PI


class Emission(abc.ABC):
    """One family of conditional distributions p(x_t | h_t)."""

    #: the number of parameters P the network must emit per step.
    num_outputs: int

    @abc.abstractmethod
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Log density of each step.

        Args:
            params: ``[N, T, P]``.
            x: ``[N, T]`` symbols (int64) or ``[N, T, D]`` standardised reals.

        Returns:
            ``[N, T]`` in the dtype of ``params``.
        """

    @abc.abstractmethod
    def sample(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        """Draw one observation per row.

        Args:
            params: ``[N, P]``.
            temperature: 1 samples the model; see the subclass for what it does otherwise.

        Returns:
            ``[N]`` symbols or ``[N, D]`` standardised reals.
        """


class CategoricalEmission(Emission):
    """Symbols ``0..V-1`` with probabilities ``softmax(params)``.

    ``temperature`` divides the logits: below 1 sharpens, above 1 flattens.
    """

    def __init__(self, num_symbols: int):
        self.num_symbols = num_symbols
        self.num_outputs = num_symbols

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, t, v = params.shape
        nll = F.cross_entropy(params.reshape(n * t, v), x.reshape(n * t), reduction="none")
        return -nll.view(n, t)

    def sample(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        probs = torch.softmax(params / temperature, dim=-1)
        return torch.multinomial(probs, 1).squeeze(-1)


class GaussianEmission(Emission):
    """A Gaussian with diagonal covariance: ``params = [mean (D), raw scale (D)]``.

    The standard deviation is ``softplus(raw) + MIN_SCALE``. ``temperature`` multiplies the
    standard deviation (0 < temperature < 1 concentrates samples near the mean).
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.num_outputs = 2 * dim

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return params[..., : self.dim], _scale(params[..., self.dim:])

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, scale = self._split(params)
        return _normal_log_prob(x, mean, scale).sum(-1)

    def sample(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        mean, scale = self._split(params)
        return mean + temperature * scale * torch.randn_like(mean)


class MixtureEmission(Emission):
    """A mixture of K Gaussians, each with diagonal covariance.

    ``params = [logits (K), means (K*D), raw scales (K*D)]``. ``temperature`` divides the
    mixing logits and multiplies every component's standard deviation.
    """

    def __init__(self, dim: int, num_components: int):
        self.dim = dim
        self.num_components = num_components
        self.num_outputs = num_components * (1 + 2 * dim)

    def _split(self, params: torch.Tensor):
        k, d = self.num_components, self.dim
        logits = params[..., :k]
        means = params[..., k: k + k * d].unflatten(-1, (k, d))
        scales = _scale(params[..., k + k * d:]).unflatten(-1, (k, d))
        return logits, means, scales

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, means, scales = self._split(params)
        per_component = _normal_log_prob(x.unsqueeze(-2), means, scales).sum(-1)  # [N, T, K]
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + per_component, dim=-1)

    def sample(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        logits, means, scales = self._split(params)
        k = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)  # [N, 1]
        index = k.unsqueeze(-1).expand(-1, 1, self.dim)
        mean = means.gather(1, index).squeeze(1)
        scale = scales.gather(1, index).squeeze(1)
        return mean + temperature * scale * torch.randn_like(mean)
