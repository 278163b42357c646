"""Exact HMM recursions as pure tensor functions (no model objects).

Shape letters: N sequences, T steps (``T_max`` the longest), K states. Every function takes
the emission log-likelihoods ``log_lik [N, T_max, K]`` (``log p(x_t | z_t = k)``), the
initial distribution ``initial [K]`` (of the state at the first observation), the transition
matrix ``transition [K, K]`` (rows: from) and ``lengths [N]``. Everything is float64.

The forward pass works in probability space with per-step normalisers (the "scaled" forward
algorithm): with ``b_t = exp(log_lik_t - m_t)`` (``m_t`` the largest log-likelihood at step
``t``) and the predicted distribution ``p_t = P(z_t | x_<t)``,

    c_t = sum_k p_t[k] b_t[k],    u_t = p_t * b_t / c_t = P(z_t | x_<=t),    p_(t+1) = u_t A,

so ``log p(x_t | x_<t) = log c_t + m_t`` exactly: the per-step conditionals come for free.
Zeros in the parameters are fine: a step of probability zero gives ``c_t = 0`` and the
conditional ``-inf`` (never NaN). Once a sequence has become impossible, its later
conditionals are undefined; they are reported as ``-inf`` and its later filtered
distributions as zero vectors.

Long sequences use a blocked parallel scan (:func:`scan`): the time axis is cut into chunks,
every chunk's product ``G = D_1 A D_2 A ... D_L A`` (``D_l = diag(b_l)``) is formed for all
chunks at once, the chunks are chained with one vector-matrix product each, and a second pass
runs the exact per-step recursion inside all chunks in a batch from each chunk's incoming
predicted distribution. The result is the same recursion, up to floating-point rounding.

The backward pass is the same scan run on the time-reversed sequences with ``A^T``: it yields
``r_t`` proportional to ``b_t * beta_t``, and the posterior marginal is ``p_t * r_t``
normalised.

Padding is harmless by construction: padded steps get ``log_lik = 0`` (``b = 1``), they come
after each sequence's end so they never influence a real step of the forward pass, and the
backward pass runs on sequences reversed within their own lengths.

The model calls the fast paths at the end of this module (:class:`Scaled`,
:func:`hmm_log_prob`, :func:`hmm_forward_backward`, :func:`hmm_viterbi`), which run the same
recursions without a Python step per time step: the forward-backward, the max-product and
the log-likelihood of long, ragged or small batches as one compiled loop per sequence
(:mod:`probseq.hmm.compiled`), the log-likelihood of many rows of similar length as a NumPy
recursion vectorised across them (:mod:`probseq.hmm.kernels`: normalisation once per block
behind an underflow guard, rows sorted by length instead of masks). Whatever they refuse (a
mass below the guard, an impossible step) is recomputed by the torch recursions above, which
are also the slow references of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from probseq.hmm import kernels

__all__ = [
    "Scaled",
    "hmm_log_prob",
    "hmm_forward_backward",
    "emission_scale",
    "scan",
    "hmm_filter",
    "hmm_log_prob_differentiable",
    "hmm_posteriors",
    "hmm_viterbi",
    "reverse_padded",
    "backward_sample",
]

# Rough cost model (seconds) used to choose between the plain and the chunked scan.
_OP_OVERHEAD = 6e-6
_VECTOR_FLOPS = 2e9
_MATRIX_FLOPS = 1.5e10


def emission_scale(log_lik: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift the emission log-likelihoods per step and exponentiate.

    Args:
        log_lik: ``[N, T, K]`` emission log-likelihoods (may hold ``-inf``).
        mask: ``[N, T]`` bool, True at real steps.

    Returns:
        ``(b, m)``: ``b [N, T, K]`` in ``[0, 1]`` with ``b = exp(log_lik - m)``, and the shift
        ``m [N, T]`` (0 at padded steps, where ``b = 1``, and at steps where every state has
        probability zero, where ``b = 0``).
    """
    log_lik = torch.where(mask[..., None], log_lik, torch.zeros((), dtype=log_lik.dtype))
    m = log_lik.amax(-1)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype))
    return torch.exp(log_lik - m[..., None]), m


def _scan_plain(init: torch.Tensor, transition: torch.Tensor,
                bt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled forward recursion, one Python step per time step, vectorised across rows.

    Time-major throughout (the rows of one step are contiguous).

    Args:
        init: ``[B, K]`` predicted distribution at the first step.
        transition: ``[K, K]``.
        bt: ``[T, B, K]`` scaled emission likelihoods.

    Returns:
        ``(u, c)``: filtered distributions ``[T, B, K]`` and normalisers ``[T, B]``.
    """
    steps, rows, k = bt.shape
    bt = bt.contiguous()
    u = torch.empty_like(bt)
    c = torch.empty(steps, rows, dtype=bt.dtype, device=bt.device)
    pred = torch.empty(rows, k, dtype=bt.dtype, device=bt.device)
    torch.mul(init, bt[0], out=u[0])
    torch.sum(u[0], -1, out=c[0])
    u[0].div_(c[0].unsqueeze(-1))
    for t in range(1, steps):
        torch.mm(u[t - 1], transition, out=pred)
        torch.mul(pred, bt[t], out=u[t])
        torch.sum(u[t], -1, out=c[t])
        u[t].div_(c[t].unsqueeze(-1))
    bad = ~(c > 0).all(0)
    if bad.any():
        # A zero normaliser (an impossible step) gave 0/0 above; redo those rows carefully.
        idx = torch.nonzero(bad).squeeze(-1)
        u[:, idx], c[:, idx] = _scan_guarded(init[idx], transition, bt[:, idx])
    return u, c


def _scan_guarded(init: torch.Tensor, transition: torch.Tensor,
                  bt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`_scan_plain`, dividing by ``max(c, tiny)`` so that ``c = 0`` gives ``u = 0``."""
    tiny = torch.finfo(bt.dtype).tiny
    us, cs = [], []
    pred = init
    for t in range(bt.shape[0]):
        v = pred * bt[t]
        c = v.sum(-1)
        u = v / c.clamp_min(tiny).unsqueeze(-1)
        us.append(u)
        cs.append(c)
        pred = u @ transition
    return torch.stack(us), torch.stack(cs)


def _blocks(b: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
    """``b [N, T, K]`` padded with ones to whole chunks, time-major: ``[L, N * C, K]``; C."""
    n, steps, k = b.shape
    num_chunks = -(-steps // chunk)
    padded = num_chunks * chunk
    if padded != steps:
        ones = torch.ones(n, padded - steps, k, dtype=b.dtype, device=b.device)
        b = torch.cat([b, ones], 1)
    blocks = b.reshape(n, num_chunks, chunk, k).permute(2, 0, 1, 3).contiguous()
    return blocks.reshape(chunk, n * num_chunks, k), num_chunks


def _unblock(u: torch.Tensor, c: torch.Tensor, n: int, steps: int,
             filtered: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Inverse of :func:`_blocks` for the scan's outputs ``u [L, N*C, K]``, ``c [L, N*C]``."""
    chunk, rows, k = u.shape
    c = c.reshape(chunk, n, -1).permute(1, 2, 0).reshape(n, -1)[:, :steps]
    if not filtered:
        return None, c
    u = u.reshape(chunk, n, -1, k).permute(1, 2, 0, 3).reshape(n, -1, k)[:, :steps]
    return u, c


def _scan_chunked(init: torch.Tensor, transition: torch.Tensor, b: torch.Tensor,
                  chunk: int, filtered: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The blocked parallel scan with chunk products; same contract as :func:`scan`."""
    n, steps, k = b.shape
    blocks, num_chunks = _blocks(b, chunk)
    rows = blocks.shape[1]
    # Stage 1: G = D_1 A D_2 A ... D_L A for every chunk, built right to left as [K, rows, K]
    # so that each step is one large matrix product with the shared A.
    bt = blocks.transpose(1, 2)  # [L, K, rows]
    g = transition[:, None, :] * bt[chunk - 1][:, :, None]
    for step in range(chunk - 2, -1, -1):
        g = (transition @ g.reshape(k, rows * k)).reshape(k, rows, k)
        g.mul_(bt[step][:, :, None])
        scale = g.amax(dim=(0, 2))
        g.div_(torch.where(scale > 0, scale, torch.ones((), dtype=g.dtype))[None, :, None])
    g = g.permute(1, 0, 2).reshape(n, num_chunks, k, k)
    # Stage 2: chain the chunks: incoming predicted distribution of every chunk.
    incoming = torch.empty(n, num_chunks, k, dtype=b.dtype, device=b.device)
    p = init
    incoming[:, 0] = p
    for j in range(num_chunks - 1):
        q = torch.bmm(p.unsqueeze(1), g[:, j]).squeeze(1)
        s = q.sum(-1, keepdim=True)
        p = torch.where(s > 0, q / torch.where(s > 0, s, torch.ones((), dtype=s.dtype)), p)
        incoming[:, j + 1] = p
    # Stage 3: the exact recursion inside every chunk at once.
    u, c = _scan_plain(incoming.reshape(rows, k), transition, blocks)
    return _unblock(u, c, n, steps, filtered)


def _log_ratio_gap(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``max |log p - log q|`` over the last axis (0 where both are 0, inf where one is)."""
    both = (p == 0) & (q == 0)
    gap = (torch.log(p) - torch.log(q)).abs()
    return torch.where(both, torch.zeros((), dtype=p.dtype), gap).amax(-1)


def _scan_speculative(init: torch.Tensor, transition: torch.Tensor, b: torch.Tensor,
                      chunk: int, lengths: torch.Tensor | None, filtered: bool = True,
                      max_passes: int = 6,
                      tol: float = 1e-13) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Chunked scan by fixed-point passes, exact up to ``tol`` per chunk boundary.

    Every chunk runs the exact recursion (in a batch across chunks) from a guessed incoming
    predicted distribution; each pass replaces the guesses by the previous chunks' outgoing
    distributions. When every guess equals the distribution its predecessor hands over
    (elementwise log-ratio below ``tol``), the pass is the sequential recursion with a
    perturbation below ``tol`` injected at each boundary; since the filter is non-expanding in
    that log-ratio (Hilbert) metric, every per-step conditional is then off by at most
    ``2 * tol`` and the total by at most ``tol`` per chunk. Forgetting chains converge in two
    passes; otherwise (or with impossible steps) this falls back to :func:`_scan_chunked`.
    """
    n, steps, k = b.shape
    blocks, num_chunks = _blocks(b, chunk)
    rows = blocks.shape[1]
    incoming = torch.full((n, num_chunks, k), 1.0 / k, dtype=b.dtype, device=b.device)
    incoming[:, 0] = init
    starts = torch.arange(1, num_chunks, device=b.device) * chunk
    ends = lengths if lengths is not None else torch.full((n,), steps, device=b.device)
    live = starts[None, :] < ends[:, None]  # [N, C-1]: boundaries inside the sequence
    for _ in range(max_passes):
        u, c = _scan_plain(incoming.reshape(rows, k), transition, blocks)
        if not bool((c > 0).all()):
            break
        out = (u[-1] @ transition).reshape(n, num_chunks, k)[:, :-1]
        gap = _log_ratio_gap(out, incoming[:, 1:])
        if not bool(torch.where(live, gap, torch.zeros((), dtype=gap.dtype)).gt(tol).any()):
            return _unblock(u, c, n, steps, filtered)
        incoming = torch.cat([incoming[:, :1], out], 1)
    return _scan_chunked(init, transition, b, chunk, filtered)


def _choose_chunk(n: int, steps: int, k: int) -> int:
    """0 for the plain scan, else the chunk length for the chunked scan (rough cost model)."""
    if steps < 512:
        return 0
    flops = n * steps * k * (k + 2) * 2 / _VECTOR_FLOPS
    plain = steps * 4 * _OP_OVERHEAD + flops
    chunk = max(64, int(math.sqrt(steps)))
    num_chunks = -(-steps // chunk)
    # Two passes of the batched recursion plus the boundary checks.
    chunked = 2 * (chunk * 4 * _OP_OVERHEAD + flops) + num_chunks * n * k * 1e-8
    return chunk if chunked < 0.7 * plain else 0


def scan(init: torch.Tensor, transition: torch.Tensor, b: torch.Tensor,
         chunk_size: int | None = None, lengths: torch.Tensor | None = None,
         method: str = "speculative",
         filtered: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The scaled forward recursion ``u_t ∝ (u_(t-1) A) * b_t``, ``u_1 ∝ init * b_1``.

    Args:
        init: ``[K]`` or ``[N, K]`` predicted distribution at the first step (sums to 1).
        transition: ``[K, K]`` (rows: from).
        b: ``[N, T, K]`` non-negative scaled emission likelihoods.
        chunk_size: ``None`` chooses by a cost model; 0 forces the plain recursion; a
            positive integer forces a chunked scan with chunks of that length.
        lengths: ``[N]`` real lengths (steps past them are ignored by the chunked scans).
        method: the chunked scan: ``"speculative"`` (fixed-point passes, falling back to
            products when they do not settle) or ``"products"`` (chunk products).
        filtered: False skips building ``u`` (returned as None) where that saves work.

    Returns:
        ``(u, c)``: ``u [N, T, K]`` the normalised filtered vectors and ``c [N, T]`` the
        normalisers (``c = 0`` at a step of probability zero, where ``u`` is then garbage
        for the rest of that row; :func:`hmm_filter` cleans it up).
    """
    n, steps, k = b.shape
    init = init.expand(n, k).to(b.dtype)
    if chunk_size is None:
        chunk_size = _choose_chunk(n, steps, k)
    if chunk_size and steps > chunk_size:
        if method == "products":
            return _scan_chunked(init, transition, b, int(chunk_size), filtered)
        return _scan_speculative(init, transition, b, int(chunk_size), lengths, filtered)
    u, c = _scan_plain(init, transition, b.transpose(0, 1))
    return u.transpose(0, 1), c.transpose(0, 1)


def _impossible_after(c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` bool: at or after the first real step with ``c = 0``."""
    zero = (~(c > 0)) & mask
    return torch.cumsum(zero.to(torch.int64), 1) > 0


def hmm_filter(initial: torch.Tensor, transition: torch.Tensor, log_lik: torch.Tensor,
               lengths: torch.Tensor, chunk_size: int | None = None,
               filtered: bool = True,
               scaled: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward pass: per-step conditionals and filtered marginals.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        log_lik: ``[N, T_max, K]`` (ignored, may be None, when ``scaled`` is given).
        lengths: ``[N]``.
        chunk_size: see :func:`scan`.
        filtered: False skips the filtered marginals (returned as None).
        scaled: optionally ``(b, m)`` as :func:`emission_scale` returns them, computed by
            a faster route (padded steps may hold anything finite in ``[0, 1]``).

    Returns:
        ``(steps, filtered)``: ``steps [N, T_max]`` ``log p(x_t | x_<t)`` (0 at padding,
        ``-inf`` from the first impossible step on) and ``filtered [N, T_max, K]``
        ``P(z_t | x_<=t)`` (zero at padding and after an impossible step).
    """
    if scaled is None:
        mask = _mask(lengths, log_lik.shape[1])
        b, m = emission_scale(log_lik, mask)
    else:
        b, m = scaled
        mask = _mask(lengths, b.shape[1])
        if not bool(mask.all()):
            b = torch.where(mask[..., None], b, torch.ones((), dtype=b.dtype))
    u, c = scan(initial, transition, b, chunk_size, lengths, filtered=filtered)
    dead = _impossible_after(c, mask)
    steps = _steps(c, m, mask, dead)
    if u is not None:
        u = torch.where((mask & ~dead)[..., None], u, torch.zeros((), dtype=u.dtype))
    return steps, u


def _steps(c: torch.Tensor, m: torch.Tensor, mask: torch.Tensor,
           dead: torch.Tensor) -> torch.Tensor:
    steps = torch.log(torch.where(dead, torch.ones((), dtype=c.dtype), c)) + m
    steps = torch.where(dead, torch.full((), -math.inf, dtype=c.dtype), steps)
    return torch.where(mask, steps, torch.zeros((), dtype=c.dtype))


def hmm_log_prob_differentiable(initial: torch.Tensor, transition: torch.Tensor,
                                log_lik: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[N]`` log-likelihoods through a forward pass that autograd can differentiate.

    Used for gradient fitting and inside Pyro models; the same scaled recursion as
    :func:`scan` without in-place buffers. Parameters should be strictly positive here.
    """
    mask = _mask(lengths, log_lik.shape[1])
    log_lik = torch.where(mask[..., None], log_lik, torch.zeros((), dtype=log_lik.dtype))
    m = log_lik.detach().amax(-1)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype))
    b = torch.exp(log_lik - m[..., None])
    pred = initial.expand(b.shape[0], -1)
    logs = []
    for t in range(b.shape[1]):
        v = pred * b[:, t]
        c = v.sum(-1)
        logs.append(torch.log(c))
        pred = (v / c.unsqueeze(-1)) @ transition
    steps = torch.stack(logs, 1) + m
    return torch.where(mask, steps, torch.zeros((), dtype=steps.dtype)).sum(-1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x [N, T_max, ...]`` within its own length (padding stays put)."""
    t_max = x.shape[1]
    t = torch.arange(t_max, device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2)).expand_as(x)
    return torch.gather(x, 1, idx)


def hmm_posteriors(initial: torch.Tensor, transition: torch.Tensor, log_lik: torch.Tensor,
                   lengths: torch.Tensor, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """Forward-backward: smoothed marginals and expected transition counts.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        log_lik: ``[N, T_max, K]``.
        lengths: ``[N]``.
        chunk_size: see :func:`scan`.

    Returns:
        A dict with ``log_prob [N]``, ``steps [N, T_max]``, ``filtered [N, T_max, K]``,
        ``smoothed [N, T_max, K]`` ``P(z_t | x_1..x_T)`` (zero at padding and for impossible
        sequences), ``transition_counts [K, K]`` (expected number of ``i -> j`` moves summed
        over the sequences) and ``initial_counts [K]`` (the smoothed first-step marginals
        summed over the sequences).
    """
    n, t_max, k = log_lik.shape
    mask = _mask(lengths, t_max)
    b, m = emission_scale(log_lik, mask)
    u, c = scan(initial, transition, b, chunk_size, lengths)
    dead = _impossible_after(c, mask)
    steps = _steps(c, m, mask, dead)
    possible = ~dead.any(-1)
    u = torch.where((mask & ~dead)[..., None], u, torch.zeros((), dtype=u.dtype))
    # Backward pass as a forward scan of the reversed sequences with A^T.
    uniform = torch.full((k,), 1.0 / k, dtype=b.dtype, device=b.device)
    r_rev, _ = scan(uniform, transition.T.contiguous(), reverse_padded(b, lengths), chunk_size,
                    lengths)
    r = reverse_padded(r_rev, lengths)
    pred = torch.cat([initial.expand(n, 1, k).to(u.dtype), u[:, :-1] @ transition], 1)
    joint = pred * r
    z = joint.sum(-1)
    ok = mask & possible[:, None] & (z > 0)
    zs = torch.where(ok, z, torch.ones((), dtype=z.dtype))
    smoothed = torch.where(ok[..., None], joint / zs[..., None], torch.zeros((), dtype=z.dtype))
    # xi_t(i, j) = u_(t-1)(i) A_ij r_t(j) / z_t for t >= 1.
    w = torch.where(ok[:, 1:, None], r[:, 1:] / zs[:, 1:, None], torch.zeros((), dtype=r.dtype))
    counts = u[:, :-1].reshape(-1, k).T @ w.reshape(-1, k)
    return {
        "log_prob": steps.sum(-1),
        "steps": steps,
        "filtered": u,
        "smoothed": smoothed,
        "transition_counts": counts * transition,
        "initial_counts": smoothed[:, 0].sum(0),
    }


def hmm_viterbi(initial: torch.Tensor, transition: torch.Tensor, log_lik: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely state paths (max-product in log space, one compiled loop per sequence:
    :func:`probseq.hmm.compiled.viterbi`).

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        log_lik: ``[N, T_max, K]``.
        lengths: ``[N]``.

    Returns:
        ``(paths, log_joint)``: ``paths [N, T_max]`` int64 with ``-1`` at padded steps, and
        ``log_joint [N]`` the log joint probability of each path with its sequence. Ties go
        to the lowest state index.
    """
    from probseq.hmm import compiled  # compiles (or loads from its cache) on first use

    with np.errstate(divide="ignore"):
        log_init = np.log(initial.detach().cpu().numpy())
        log_a = np.log(transition.detach().cpu().numpy())
    paths, log_joint = compiled.viterbi(log_init, log_a, log_lik.detach().cpu().numpy(),
                                        lengths.cpu().numpy())
    return torch.from_numpy(paths), torch.from_numpy(log_joint)


def backward_sample(filtered: torch.Tensor, transition: torch.Tensor, last: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``z_1..z_(T-1)`` from ``P(z_1..z_(T-1) | x, z_T = last)`` (forward filtering,
    backward sampling) for one sequence's filtered marginals.

    Args:
        filtered: ``[T, K]`` filtered marginals of one sequence.
        transition: ``[K, K]``.
        last: ``[S]`` int64 states at the last step, one per draw.

    Returns:
        ``[S, T]`` int64 state paths ending in ``last``.
    """
    steps = filtered.shape[0]
    out = torch.empty(last.shape[0], steps, dtype=torch.int64, device=last.device)
    out[:, -1] = last
    cur = last
    for t in range(steps - 2, -1, -1):
        w = filtered[t][None, :] * transition[:, cur].T
        cur = torch.multinomial(w / w.sum(-1, keepdim=True), 1, generator=generator).squeeze(1)
        out[:, t] = cur
    return out


def _mask(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    return torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]


# --------------------------------------------------------------------------- NumPy fast paths
def _row_major_steps(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(seq [M], pos [M])``: the sequence and step of every real step, row after row."""
    seq = np.repeat(np.arange(lengths.shape[0]), lengths)
    starts = np.cumsum(lengths) - lengths
    return seq, np.arange(seq.shape[0]) - starts[seq]


class Scaled:
    """Scaled emission likelihoods ``b = exp(log_lik - m)`` of a ragged batch, in one of two
    forms: a table ``[V, K]`` with shifts ``[V]`` gathered by symbols ``[N, T_max]``
    (categorical emissions: nothing of size ``[N, T, K]`` is built for a likelihood), or dense,
    from the emission log-likelihoods ``[N, T_max, K]``, scaled as :func:`emission_scale` does
    and stored time-major (``b [T_max, N, K]``, ``m [T_max, N]``; 1 and 0 at padding), or
    packed (Gaussian emissions: computed for the real steps only, on first use, in the order
    of whichever recursion asks: row after row for :meth:`row_major`, time-major for
    :meth:`time_major`; the padded form is built only if asked for).

    Args:
        lengths: ``[N]`` int64.
        table: ``[V, K]`` float64 with ``max_k table[v, k] = 1`` (or a zero row).
        shift: ``[V]`` float64.
        symbols: ``[N, T_max]`` int64 (padding may hold anything).
        log_lik: ``[N, T_max, K]`` (padding may hold anything finite or not).
        packed: ``fn(rows [M], steps [M]) -> (b [M, K], m [M])``, the scaled likelihoods of
            the given (row, step) pairs (an emission's ``scaled_packed``); only the real steps
            are computed and stored, the padded form is built if something asks for it.
    """

    def __getattr__(self, name: str):
        # The mask and the padded symbols (padding read as symbol V, the row of ones), built
        # on first use: the kernels gather real steps only, and a ragged batch's padded
        # [N, T_max] arrays can be many times its size.
        if name == "mask":
            t_max = int(self.lengths.max())
            self.mask = np.arange(t_max)[None, :] < self.lengths[:, None]
            return self.mask
        if name == "symbols" and "_raw" in self.__dict__:
            self.symbols = np.where(self.mask, self._raw, self.table.shape[0] - 1)
            return self.symbols
        # The padded time-major form of a packed batch, built on first use.
        if "_packed_fn" in self.__dict__:
            if name == "_rows":  # row after row
                seq, pos = _row_major_steps(self.lengths)
                self._rows = (*self._packed_fn(seq, pos), seq, pos)
                return self._rows
            if name == "_packed_dense":  # time-major, rows sorted by decreasing length
                order = np.argsort(-self.lengths, kind="stable")
                alive = kernels.alive_counts(self.lengths[order])
                off = np.zeros(alive.shape[0] + 1, dtype=np.int64)
                np.cumsum(alive, out=off[1:])
                step = np.repeat(np.arange(alive.shape[0]), alive)
                row = np.arange(off[-1]) - off[step]
                self._packed_dense = (order, off, *self._packed_fn(order[row], step),
                                      order[row], step)
                return self._packed_dense
            if name in ("b_tm", "m_tm"):  # the padded time-major form
                b, m, seq, pos = self._packed()
                t_max = int(self.lengths.max())
                n = self.lengths.shape[0]
                if name == "b_tm":
                    out = np.ones((t_max, n, b.shape[-1]))
                    out[pos, seq] = b
                else:
                    out = np.zeros((t_max, n))
                    out[pos, seq] = m
                setattr(self, name, out)
                return out
        raise AttributeError(name)

    def __init__(self, lengths: torch.Tensor, *, table: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None, symbols: torch.Tensor | None = None,
                 log_lik: torch.Tensor | None = None,
                 packed: Callable[[np.ndarray, np.ndarray],
                                  tuple[np.ndarray, np.ndarray]] | None = None):
        self.lengths = lengths.cpu().numpy().astype(np.int64)
        t_max = int(self.lengths.max())
        if table is not None:
            k = table.shape[1]
            # Row V is the padding symbol: b = 1 and m = 0.
            self.table = np.concatenate([table.numpy(), np.ones((1, k))])
            self.shift_table = np.concatenate([shift.numpy(), np.zeros(1)])
            # Symbols at real steps (padding holds anything; ``symbols`` reads it as V).
            self._raw = symbols[:, :t_max].cpu().numpy()
            self.b = self.m = None
            return
        if packed is not None:
            # Only the real steps (a ragged batch costs its steps, not T_max * N), computed
            # when a recursion asks, in its order.
            self.table = None
            self._packed_fn = packed
        else:
            self.table = None
            mask = self.mask
            # Time-major: log_lik is usually a transposed view of a time-major result.
            ll = log_lik[:, :t_max].detach().cpu().transpose(0, 1).numpy()
            k = ll.shape[-1]
            m = ll[..., 0].copy()
            for j in range(1, k):  # K maxima on [T, N] beat a reduction over a short axis
                np.maximum(m, ll[..., j], out=m)
            real = mask.T
            m[~(np.isfinite(m) & real)] = 0.0
            with np.errstate(invalid="ignore"):
                b = np.subtract(ll, m[..., None])
                np.exp(b, out=b)
            if not real.all():
                b[~real] = 1.0
            self.b_tm, self.m_tm = b, m

    def min_positive(self) -> float:
        """The smallest non-zero scaled likelihood (1 if none): what
        :func:`probseq.hmm.kernels.needs_flush` takes. For a table, over all its symbols
        (a bound: symbols absent from the batch can only make it smaller)."""
        if self.table is not None:
            x = self.table
        elif "_packed_fn" in self.__dict__:
            x = self._packed()[0]
        else:
            x = self.b_tm
        low = float(x.min()) if x.size else 1.0
        if low > 0:  # one reduction; zeros (rare outside tables) need the masked one
            return low
        positive = x[x > 0]
        return float(positive.min()) if positive.size else 1.0

    @property
    def num_states(self) -> int:
        if self.table is not None:
            return self.table.shape[-1]
        if "_packed_fn" in self.__dict__:
            return self._packed()[0].shape[-1]
        return self.b_tm.shape[-1]

    def shift_sums(self, order: np.ndarray) -> np.ndarray:
        """``[N]`` the sum of each row's shifts, rows in ``order`` (packed when
        :meth:`time_major` was last called with the same order)."""
        packed = self.__dict__.get("_packed")
        if self.table is not None and packed is not None and packed[0] is order:
            _, xp, row = packed
            return np.bincount(row, weights=self.shift_table[xp], minlength=order.shape[0])
        if "_packed_fn" in self.__dict__:
            _, m, seq, _ = self._packed()
            return np.bincount(seq, weights=m, minlength=order.shape[0])[order]
        return self.shifts().sum(1)[order]

    def _packed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(b [M, K], m [M], seq [M], pos [M])`` of a packed batch, in whichever order was
        computed (row after row if neither was)."""
        if "_packed_dense" in self.__dict__:
            return self._packed_dense[2:]
        return self._rows

    def shifts(self) -> np.ndarray:
        """``m [N, T_max]``, zero at padding."""
        if self.table is not None:
            return self.shift_table[self.symbols]
        return self.m_tm.T

    def time_major(self, order: np.ndarray) -> kernels.Blocks:
        """Blocks ``[t1 - t0, n, K]`` of the rows ``order`` (time-major, for the kernels).

        ``order`` must sort the rows by decreasing length and blocks are asked for with
        ``n`` the rows alive over ``[t0, t1)`` (as :func:`probseq.hmm.kernels.segments`
        cuts them): symbols are then gathered packed, without padding.
        """
        if self.table is not None:
            lengths = self.lengths[order]
            alive = kernels.alive_counts(lengths)
            off = np.zeros(alive.shape[0] + 1, dtype=np.int64)
            np.cumsum(alive, out=off[1:])
            step = np.repeat(np.arange(alive.shape[0]), alive)
            row = np.arange(off[-1]) - off[step]
            xp = self._raw[order[row], step]
            self._packed = (order, xp, row)
            table = self.table
            k = table.shape[1]
            return lambda t0, t1, n: np.take(table, xp[off[t0]:off[t1]], axis=0).reshape(
                t1 - t0, n, k)
        if "_packed_fn" in self.__dict__ and "_rows" not in self.__dict__ and np.array_equal(
                self._packed_dense[0], order):
            off, bp = self._packed_dense[1], self._packed_dense[2]
            k = bp.shape[-1]
            return lambda t0, t1, n: bp[off[t0]:off[t1]].reshape(t1 - t0, n, k)
        b = self.b_tm
        if not (order == np.arange(order.shape[0])).all():
            b = b[:, order]
        return lambda t0, t1, n: b[t0:t1, :n]

    def row_major(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The real steps packed row after row (row 0's steps first), as
        :func:`probseq.hmm.compiled.forward_backward` takes them.

        Returns:
            ``(b, m, index, seq, pos)``: a source table ``b [X, K]`` with its shifts
            ``m [X]``, ``index [M]`` the source entry of each packed step, and ``seq [M]``,
            ``pos [M]`` the sequence and step of each.
        """
        if "_packed_fn" in self.__dict__:
            b, m, seq, pos = self._packed()
            index = np.arange(seq.shape[0]) if "_packed_dense" not in self.__dict__ else (
                np.argsort(seq, kind="stable"))  # time-major entries, read row after row
            return b, m, index, seq[index], pos[index]
        seq, pos = _row_major_steps(self.lengths)
        if self.table is not None:
            return self.table, self.shift_table, self._raw[seq, pos], seq, pos
        # One gather of the real steps: reading the time-major array step by step inside the
        # recursion would jump N * K entries at every step.
        return self.b_tm[pos, seq], self.m_tm[pos, seq], np.arange(seq.shape[0]), seq, pos

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The real steps as :func:`probseq.hmm.compiled.log_prob` reads them, without
        building per-step row and step indices where it can (symbols are read in place).

        Returns:
            ``(b, m, index, starts)``: a source table ``b [X, K]`` with its shifts ``m [X]``,
            and ``index [*]`` the source entry of each step, row ``r``'s steps starting at
            ``starts[r]``.
        """
        n = self.lengths.shape[0]
        if self.table is not None:
            raw = np.ascontiguousarray(self._raw, dtype=np.int64)
            return (self.table, self.shift_table, raw.reshape(-1),
                    np.arange(n, dtype=np.int64) * raw.shape[1])
        b, m, index, _, _ = self.row_major()
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=starts[1:])
        return b, m, index, starts

    def dense(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, m)`` of the given rows as torch tensors (for the guarded recursion)."""
        if self.table is not None:
            x = self.symbols[rows]
            return torch.from_numpy(self.table[x]), torch.from_numpy(self.shift_table[x])
        b = np.ascontiguousarray(self.b_tm[:, rows].transpose(1, 0, 2))
        return torch.from_numpy(b), torch.from_numpy(np.ascontiguousarray(self.m_tm[:, rows].T))


def _use_compiled(lengths: np.ndarray, k: int) -> bool:
    """Whether the compiled loop per sequence beats the NumPy recursion vectorised across
    sequences for a forward pass (rough cost model, seconds, measured on one core).

    The NumPy recursion pays ~6 us of calls per step of the longest sequence and ~2.8 K ns
    per (row, step) entry (its products run in BLAS); the compiled loop
    (:func:`probseq.hmm.compiled.log_prob`) pays no calls and ~(8 + 0.15 K^2) ns per entry
    on one thread (rows run in parallel threads where there are several, which this model
    leaves out). So the compiled loop wins at any shape up to K of about 18, and many rows
    of similar length with more states go to NumPy.
    """
    total = float(lengths.sum())
    numpy_cost = float(lengths.max()) * 6e-6 + total * 2.8e-9 * k
    return total * (8e-9 + 0.15e-9 * k * k) < numpy_cost


def _compiled_pass(initial: torch.Tensor, transition: torch.Tensor, scaled: Scaled,
                   backward: bool, keep: bool = True, by_source: bool = False
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """:func:`probseq.hmm.compiled.forward_backward` on the real steps of ``scaled``, in
    the flushing mode where the parameters need it (:func:`probseq.hmm.kernels.needs_flush`).

    Returns:
        ``(res, step_lp, seq, pos)``: the kernel's dict (with ``by_source`` also ``index
        [M]``, the source entry of each packed step), ``step_lp [M]`` the per-step
        ``log p(x_t | x_<t)`` (meaningless in rows that are not ``res["ok"]``), and the
        sequence and step of each packed entry.
    """
    from probseq.hmm import compiled  # compiles (or loads from its cache) on first use

    init, a = initial.numpy(), transition.numpy()
    b_src, m_src, index, seq, pos = scaled.row_major()
    flush = kernels.needs_flush(init, a, scaled.min_positive())
    if flush:
        init, a, b_src = (np.where(x < kernels.FLUSH, 0.0, x) for x in (init, a, b_src))
    res = compiled.forward_backward(init, a, b_src, index, scaled.lengths, backward=backward,
                                    keep=keep, flush=flush, block=kernels.BLOCK,
                                    min_mass=kernels.MIN_MASS_FLUSH if flush else 0.0,
                                    by_source=by_source)
    if by_source:
        res["index"] = index
    return res, res["log_c"] + m_src[index], seq, pos


def hmm_log_prob(initial: torch.Tensor, transition: torch.Tensor, scaled: Scaled,
                 chunk_size: int | None = None) -> torch.Tensor:
    """``[N]`` exact log-likelihoods, ``log p(x_1..x_T)``.

    Many rows of similar length run the block-normalised NumPy recursion vectorised across
    sequences (:func:`probseq.hmm.kernels.forward_log_mass`); long sequences, ragged and
    small batches, and any batch at few states, the same recursion as one compiled loop per
    sequence (:func:`probseq.hmm.compiled.log_prob`, rows in parallel threads where that
    pays), as a cost model chooses (:func:`_use_compiled`). Rows either
    refuses (a mass below the underflow guard, an impossible step) are recomputed by the
    per-step normalised recursion, which gives ``-inf`` for impossible sequences.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        scaled: the scaled emission likelihoods.
        chunk_size: the chunk length of the torch scan for refused rows (None chooses by a
            cost model, 0 is the plain recursion).
    """
    lengths = scaled.lengths
    n = lengths.shape[0]
    if _use_compiled(lengths, transition.shape[0]):
        from probseq.hmm import compiled  # compiles (or loads from its cache) on first use

        init, a = initial.numpy(), transition.numpy()
        b_src, m_src, index, starts = scaled.flat()
        flush = kernels.needs_flush(init, a, scaled.min_positive())
        if flush:
            init, a, b_src = (np.where(x < kernels.FLUSH, 0.0, x) for x in (init, a, b_src))
        out, ok = compiled.log_prob(init, a, b_src, m_src, index, starts, lengths,
                                    flush=flush, block=kernels.BLOCK,
                                    min_mass=kernels.MIN_MASS_FLUSH if flush else
                                    kernels.MIN_MASS)
        bad = np.nonzero(~ok)[0]
    else:
        init, a = initial.numpy(), transition.numpy()
        order = np.argsort(-lengths, kind="stable")
        mass, ok, _ = kernels.forward_log_mass(
            init, a, scaled.time_major(order), lengths[order],
            flush=kernels.needs_flush(init, a, scaled.min_positive()))
        out = np.empty(n)
        out[order] = mass + scaled.shift_sums(order)
        bad = np.sort(order[~ok])
    result = torch.from_numpy(out)
    if bad.size:
        slow = _torch_passes(initial, transition, scaled, bad, False, False, chunk_size)
        result[torch.from_numpy(bad)] = slow["steps"].sum(-1)
    return result


def _log_lik_of(b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``log b + m``: emission log-likelihoods back from their scaled form."""
    log_b = torch.where(b > 0, torch.log(b), torch.full((), -math.inf, dtype=b.dtype))
    return log_b + m[..., None]


def hmm_forward_backward(initial: torch.Tensor, transition: torch.Tensor, scaled: Scaled,
                         backward: bool = True, filtered: bool = True,
                         chunk_size: int | None = None,
                         time_major: bool = False,
                         by_source: bool = False) -> dict[str, torch.Tensor]:
    """The forward (and backward) pass, one compiled loop per sequence
    (:func:`probseq.hmm.compiled.forward_backward`): a ragged batch costs its real steps, a
    long sequence no more per step than a batch.

    The recursion is normalised every step; where the parameters could produce subnormal
    numbers it runs in the flushing mode of :mod:`probseq.hmm.kernels` (chosen by
    :func:`probseq.hmm.kernels.needs_flush`). Rows it refuses (an impossible step, or a
    normaliser below the flushing mode's guard) are recomputed by the per-step normalised
    torch recursions (:func:`hmm_filter`, :func:`hmm_posteriors`), which give ``-inf`` for
    impossible sequences.

    Args:
        initial: ``[K]``.
        transition: ``[K, K]``.
        scaled: the scaled emission likelihoods.
        backward: False runs the forward pass only.
        filtered: the forward pass also returns ``filtered``.
        chunk_size: the chunk length of the torch recursions' scan for refused rows (None
            chooses by a cost model, 0 is the plain recursion).
        time_major: with ``backward``, return the smoothed marginals packed, as ``weights
            [M, K]`` (``M`` real steps) with ``index``, a pair ``(rows [M], steps [M])`` of
            int64 tensors saying which step of which sequence each entry is, instead of
            ``smoothed [N, T_max, K]`` and ``steps``: what summing sufficient statistics
            needs, without padding.
        by_source: with ``backward`` and a symbol table, also ``by_source [V + 1, K]``:
            the smoothed distributions summed by symbol (row V: missing symbols), the
            expected emission counts summed inside the compiled pass.

    Returns:
        ``log_prob [N]``, ``steps [N, T_max]`` (0 at padding), with ``filtered`` also
        ``filtered [N, T_max, K]``, and with ``backward`` ``smoothed [N, T_max, K]`` (or
        ``weights`` and ``index``), ``transition_counts [K, K]`` and
        ``initial_counts [K]``, as :func:`hmm_posteriors` defines them.
    """
    lengths = scaled.lengths
    n = lengths.shape[0]
    t_max = int(lengths.max())
    by_source = by_source and backward and scaled.table is not None
    res, step_lp, seq, pos = _compiled_pass(initial, transition, scaled, backward,
                                            keep=backward or filtered, by_source=by_source)
    key = "smoothed" if backward else "filtered" if filtered else None
    post = res.get("post")
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    bad = np.nonzero(~res["ok"])[0]
    slow: dict[str, torch.Tensor] = {}
    if bad.size:
        # Refused rows: the per-step torch recursions, written over the compiled results.
        slow = _torch_passes(initial, transition, scaled, bad, backward, filtered, chunk_size)
        for j, r in enumerate(bad):
            here = slice(starts[r], starts[r] + lengths[r])
            step_lp[here] = slow["steps"][j, : lengths[r]].numpy()
            if key is not None:
                post[here] = slow[key][j, : lengths[r]].numpy()
    out: dict[str, torch.Tensor] = {}
    if backward and time_major:  # EM: the total per row is all that is needed
        out["log_prob"] = torch.from_numpy(np.bincount(seq, weights=step_lp, minlength=n))
        out["weights"] = torch.from_numpy(post)
        out["index"] = (torch.from_numpy(seq), torch.from_numpy(pos))
    else:
        out["steps"] = torch.from_numpy(_padded(step_lp, lengths, seq, pos, t_max))
        out["log_prob"] = out["steps"].sum(-1)
        if key is not None:
            out[key] = torch.from_numpy(_padded(post, lengths, seq, pos, t_max))
    if backward:
        xi = res["xi"]
        init_counts = post[starts[res["ok"]]].sum(0)
        if bad.size:
            xi = xi + slow["transition_counts"].numpy()
            init_counts = init_counts + slow["initial_counts"].numpy()
        out["transition_counts"] = torch.from_numpy(xi)
        out["initial_counts"] = torch.from_numpy(init_counts)
    if by_source:
        sources = res["by_source"]
        for r in bad:  # refused rows: their recomputed marginals, by symbol
            here = slice(starts[r], starts[r] + lengths[r])
            np.add.at(sources, res["index"][here], post[here])
        out["by_source"] = torch.from_numpy(sources)
    return out


def _padded(packed: np.ndarray, lengths: np.ndarray, seq: np.ndarray, pos: np.ndarray,
            t_max: int) -> np.ndarray:
    """``[N, T_max, ...]`` (zero at padding) from rows packed one after the other."""
    n = lengths.shape[0]
    if packed.shape[0] == n * t_max:  # equal lengths: the packed array is the padded one
        return packed.reshape(n, t_max, *packed.shape[1:])
    full = np.zeros((n, t_max, *packed.shape[1:]))
    full[seq, pos] = packed
    return full


def _torch_passes(initial: torch.Tensor, transition: torch.Tensor, scaled: Scaled,
                  rows: np.ndarray, backward: bool, filtered: bool,
                  chunk_size: int | None) -> dict[str, torch.Tensor]:
    """:func:`hmm_forward_backward`'s padded outputs for some ``rows`` by the per-step
    normalised torch recursions, which handle probability-zero steps (``steps``, with
    ``backward`` ``smoothed``, ``transition_counts`` and ``initial_counts``, else with
    ``filtered`` ``filtered``)."""
    b, m = scaled.dense(rows)
    lengths = torch.from_numpy(scaled.lengths[rows])
    if backward:
        return hmm_posteriors(initial, transition, _log_lik_of(b, m), lengths, chunk_size)
    steps, u = hmm_filter(initial, transition, None, lengths, chunk_size, filtered=filtered,
                          scaled=(b, m))
    return {"steps": steps, "filtered": u}
