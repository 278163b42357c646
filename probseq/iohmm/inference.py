"""Recursions of an HMM with time-varying transition matrices: pure tensor functions.

Shape letters: N sequences, T steps (``T_max`` the longest), K states, E covariates.
``transitions[n, t]`` is the matrix that moves the state from step ``t - 1`` to step ``t``
(rows: from); ``transitions[:, 0]`` is never read (the first state has ``initial``). The
time-homogeneous versions are in :mod:`probseq.hmm.inference`. Every function is
differentiable by autograd and normalises each step (no underflow on long sequences).
"""

from __future__ import annotations

import torch

__all__ = ["softmax_transitions", "forward", "forward_backward", "viterbi"]


def softmax_transitions(bias: torch.Tensor, weights: torch.Tensor,
                        exog: torch.Tensor) -> torch.Tensor:
    """``[N, T, K, K]``: ``softmax_j(bias[i, j] + weights[i, j] . exog[n, t])``.

    Args:
        bias: ``[K, K]``.
        weights: ``[K, K, E]``.
        exog: ``[N, T, E]``.
    """
    logits = bias[None, None] + torch.einsum("ije,nte->ntij", weights, exog)
    return torch.softmax(logits, -1)


def _mask(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    return torch.arange(t_max)[None, :] < lengths[:, None]


def forward(initial: torch.Tensor, transitions: torch.Tensor, log_lik: torch.Tensor,
            lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """The normalised forward pass.

    Args:
        initial: ``[K]``.
        transitions: ``[N, T_max, K, K]``.
        log_lik: ``[N, T_max, K]`` emission log-likelihoods.
        lengths: ``[N]``.

    Returns:
        ``log_prob [N]``, ``steps [N, T_max]`` (``log p(x_t | x_<t)``, 0 at padding),
        ``filtered [N, T_max, K]`` (the last real step's carried over padding), and the
        per-step ``scale [N, T_max]`` and ``shift [N, T_max]`` that :func:`forward_backward`
        reuses.
    """
    n, t_max, k = log_lik.shape
    mask = _mask(lengths, t_max)
    shift = log_lik.max(-1).values.clamp_min(-1e300)
    b = torch.exp(log_lik - shift[..., None])
    filt, steps, scale = [], [], []
    prev = None
    for t in range(t_max):
        pred = initial.expand(n, k) if t == 0 else (prev[:, None, :] @ transitions[:, t])[:, 0]
        joint = pred * b[:, t]
        c = joint.sum(-1)
        cur = joint / c[:, None]
        live = mask[:, t]
        if prev is not None:
            cur = torch.where(live[:, None], cur, prev)
        step = torch.where(live, torch.log(c) + shift[:, t], torch.zeros((), dtype=c.dtype))
        filt.append(cur)
        steps.append(step)
        scale.append(torch.where(live, c, torch.ones((), dtype=c.dtype)))
        prev = cur
    steps_t = torch.stack(steps, 1)
    return {"log_prob": steps_t.sum(1), "steps": steps_t, "filtered": torch.stack(filt, 1),
            "scale": torch.stack(scale, 1), "b": b}


def forward_backward(initial: torch.Tensor, transitions: torch.Tensor, log_lik: torch.Tensor,
                     lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Posterior marginals of the states and of consecutive pairs.

    Returns:
        :func:`forward`'s entries and ``smoothed [N, T_max, K]`` (zero at padding),
        ``pairs [N, T_max, K, K]``: ``P(z_(t-1) = i, z_t = j | x)`` at step t >= 1 (zero at
        t = 0 and at padding).
    """
    out = forward(initial, transitions, log_lik, lengths)
    n, t_max, k = log_lik.shape
    mask = _mask(lengths, t_max)
    filt, b, scale = out["filtered"], out["b"], out["scale"]
    beta = torch.ones(n, k, dtype=log_lik.dtype)
    betas = [beta]
    for t in range(t_max - 1, 0, -1):
        nxt = (transitions[:, t] @ (b[:, t] * beta)[..., None])[..., 0] / scale[:, t, None]
        beta = torch.where(mask[:, t, None], nxt, torch.ones((), dtype=nxt.dtype))
        betas.append(beta)
    betas = torch.stack(betas[::-1], 1)  # [N, T, K]
    smoothed = torch.where(mask[..., None], filt * betas, torch.zeros((), dtype=filt.dtype))
    pairs = torch.zeros(n, t_max, k, k, dtype=log_lik.dtype)
    if t_max > 1:
        right = b[:, 1:] * betas[:, 1:] / scale[:, 1:, None]  # [N, T-1, K]
        xi = filt[:, :-1, :, None] * transitions[:, 1:] * right[:, :, None, :]
        pairs[:, 1:] = torch.where(mask[:, 1:, None, None], xi, torch.zeros((), dtype=xi.dtype))
    out.update(smoothed=smoothed, pairs=pairs)
    return out


def viterbi(initial: torch.Tensor, transitions: torch.Tensor, log_lik: torch.Tensor,
            lengths: torch.Tensor) -> torch.Tensor:
    """``[N, T_max]`` int64 most likely state paths, -1 at padding (ties: lowest index)."""
    n, t_max, k = log_lik.shape
    mask = _mask(lengths, t_max)
    log_a = torch.log(transitions)
    score = torch.log(initial)[None] + log_lik[:, 0]
    back = torch.zeros(n, t_max, k, dtype=torch.int64)
    for t in range(1, t_max):
        cand = score[:, :, None] + log_a[:, t]  # [N, from, to]
        best, arg = cand.max(1)
        live = mask[:, t, None]
        score = torch.where(live, best + log_lik[:, t], score)
        back[:, t] = torch.where(live, arg, torch.arange(k)[None])
    path = torch.full((n, t_max), -1, dtype=torch.int64)
    state = score.argmax(-1)
    for t in range(t_max - 1, -1, -1):
        live = mask[:, t]
        path[:, t] = torch.where(live, state, path[:, t])
        if t:
            state = torch.where(live, back[:, t].gather(1, state[:, None])[:, 0], state)
    return path
