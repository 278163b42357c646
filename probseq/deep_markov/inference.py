"""Importance-weighted evaluation of a deep Markov model: pure tensor functions.

The functions take the networks of :class:`~probseq.deep_markov.networks.DMMNetwork` as
plain callables and never see a model object. Shapes: K particles, N sequences, T steps
(``T_max`` in a padded batch), S latent dimensions, D observation dimensions. All data is
in the model's (standardised) units; the caller adds the Jacobian.
"""

from __future__ import annotations

import math

import torch

from probseq.deep_markov.networks import DMMNetwork

__all__ = ["step_mask", "sample_guide", "log_joint_steps", "importance_log_weights", "iwae_steps"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def step_mask(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    """``[N, T_max]`` bool, True at real steps."""
    t = torch.arange(t_max, device=lengths.device)
    return t[None, :] < lengths[:, None]


def _normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log density summed over the last axis."""
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - _HALF_LOG_2PI).sum(-1)


def sample_guide(
    net: DMMNetwork, y: torch.Tensor, lengths: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw latent paths from the guide ``q(z_1..z_T | x)`` by reparameterisation.

    Args:
        net: the networks (``rnn``, ``combiner``, ``guide_z_0`` are used).
        y: ``[N, T_max, D]`` observations.
        lengths: ``[N]``.
        noise: ``[K, N, T_max, S]`` standard normal draws; ``z_t = loc_t + scale_t * noise_t``.

    Returns:
        ``(z, log_q)``: ``z [K, N, T_max, S]`` and ``log q(z_t | z_(t-1), x_t..x_T)``
        ``[K, N, T_max]``, zero at padded steps.
    """
    k, n, t_max, s = noise.shape
    h = net.rnn(y, lengths)
    z = torch.empty_like(noise)
    log_scale = torch.empty_like(noise)
    z_prev = net.guide_z_0.expand(k, n, s)
    for t in range(t_max):  # the only sequential part: z_t depends on z_(t-1)
        loc, scale = net.combiner(z_prev, h[:, t])
        z_prev = loc + scale * noise[:, :, t]
        z[:, :, t] = z_prev
        log_scale[:, :, t] = scale.log()
    log_q = (-0.5 * noise**2 - log_scale - _HALF_LOG_2PI).sum(-1)
    return z, torch.where(step_mask(lengths, t_max), log_q, torch.zeros((), dtype=log_q.dtype))


def log_joint_steps(
    net: DMMNetwork,
    y: torch.Tensor,
    lengths: torch.Tensor,
    z: torch.Tensor,
    block_size: int | None = None,
) -> torch.Tensor:
    """``log p(x_t, z_t | z_(t-1))`` of given latent paths, vectorised over time.

    Args:
        net: the networks (``initial``, ``transition``, ``emitter`` are used).
        y: ``[N, T_max, D]``.
        lengths: ``[N]``.
        z: ``[K, N, T_max, S]``.
        block_size: steps per block (bounds the ``[K, N, block, H]`` activations);
            ``None``: all at once.

    Returns:
        ``[K, N, T_max]``, zero at padded steps.
    """
    t_max = y.shape[1]
    block_size = t_max if block_size is None else max(1, int(block_size))
    loc0, scale0 = net.initial()
    blocks = []
    for a in range(0, t_max, block_size):
        b = min(a + block_size, t_max)
        zb = z[:, :, a:b]
        if a == 0:
            log_pz = _normal_log_prob(zb[:, :, :1], loc0, scale0)
            if b > 1:
                loc, scale = net.transition(zb[:, :, :-1])
                log_pz = torch.cat([log_pz, _normal_log_prob(zb[:, :, 1:], loc, scale)], -1)
        else:
            loc, scale = net.transition(z[:, :, a - 1 : b - 1])
            log_pz = _normal_log_prob(zb, loc, scale)
        x_loc, x_scale = net.emitter(zb)
        blocks.append(log_pz + _normal_log_prob(y[:, a:b].unsqueeze(0), x_loc, x_scale))
    out = torch.cat(blocks, dim=-1)
    return torch.where(step_mask(lengths, t_max), out, torch.zeros((), dtype=out.dtype))


def importance_log_weights(
    net: DMMNetwork,
    y: torch.Tensor,
    lengths: torch.Tensor,
    noise: torch.Tensor,
    block_size: int | None = None,
) -> torch.Tensor:
    """Per-step log incremental importance weights of guide paths.

    Args:
        net: the networks.
        y: ``[N, T_max, D]``.
        lengths: ``[N]``.
        noise: ``[K, N, T_max, S]`` standard normal draws for the guide.
        block_size: as in :func:`log_joint_steps`.

    Returns:
        ``[K, N, T_max]``: ``log p(x_t, z_t | z_(t-1)) - log q(z_t | z_(t-1), x)`` at
        ``z = `` the guide's paths, zero at padded steps.
    """
    z, log_q = sample_guide(net, y, lengths, noise)
    return log_joint_steps(net, y, lengths, z, block_size) - log_q


def iwae_steps(log_w: torch.Tensor) -> torch.Tensor:
    """Per-step decomposition of the importance-weighted bound.

    With ``c_t^k = log_w[k, :, 1] + ... + log_w[k, :, t]`` (the log importance weight of
    particle k's path up to step t), ``L_t = log (1/K) sum_k exp(c_t^k)`` estimates
    ``log p(x_1..x_t)``, and step t's term is ``L_t - L_(t-1)``: an estimate of
    ``log p(x_t | x_1..x_(t-1))``. The terms telescope, so each row sums to ``L_T``, the
    IWAE bound of the whole sequence. Zero increments (padding) give zero terms.

    Args:
        log_w: ``[K, N, T_max]`` per-step log incremental weights
            ``log p(x_t, z_t | z_(t-1)) - log q(z_t | z_(t-1), x)``, zero at padding.

    Returns:
        ``[N, T_max]``.
    """
    k = log_w.shape[0]
    running = torch.logsumexp(log_w.cumsum(dim=-1), dim=0) - math.log(k)
    previous = torch.cat([torch.zeros_like(running[:, :1]), running[:, :-1]], dim=-1)
    return running - previous
