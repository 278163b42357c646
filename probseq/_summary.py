"""Free parameters and observed information for :meth:`probseq.SequenceModel.summary`.

A model describes its free parameters as a flat vector (:class:`FreeParameters`): labels,
estimates, the log-likelihood of the fitting data as a function of the vector, and which
entries sit on the boundary of the parameter space (held fixed: no standard error). The
observed information is minus the Hessian of that function at the estimates, by autograd when
the function is differentiable, else by central finite differences.

Probability vectors (rows of a transition matrix, an initial distribution, a categorical
emission) have one entry fewer than their length free: :func:`simplex_block` lists every entry
but the row's largest, which is one minus the others (the largest is never on the boundary, so
the parametrisation is regular wherever the row is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

#: an entry of a probability vector below this (a non-negative parameter below this times
#: its scale) is on the boundary: EM approaches a zero probability without reaching it, and
#: the information there is not that of an interior maximum.
BOUNDARY = 1e-7


def block_labels(name: str, shape: tuple[int, ...]) -> list[str]:
    """``name`` for a scalar, ``name[i]`` for a vector, ``name[i,j,...]`` beyond."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*shape)]


@dataclass
class FreeParameters:
    """The free parameters of a fitted model as one vector.

    Attributes:
        labels: ``[P]`` row names of the summary table.
        values: ``[P]`` the estimates (float64).
        log_lik: the log-likelihood of the fitting data at a vector ``[P]`` (float64 tensor)
            as a scalar tensor.
        differentiable: ``log_lik`` can be differentiated twice by autograd.
        fixed: ``[P]`` entries on the boundary of the parameter space: held at their
            estimate, reported without a standard error.
        probability: ``[P]`` entries that are probabilities (their intervals are formed on
            the logit scale, so they stay inside (0, 1)).
        num_observations: the values ``log_lik`` scores, for BIC (None: every observed
            value of the data).
    """

    labels: list[str]
    values: np.ndarray
    log_lik: Callable[[torch.Tensor], torch.Tensor]
    differentiable: bool = False
    fixed: np.ndarray = field(default=None)  # type: ignore[assignment]
    probability: np.ndarray = field(default=None)  # type: ignore[assignment]
    num_observations: int | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        n = len(self.values)
        self.fixed = np.zeros(n, bool) if self.fixed is None else np.asarray(self.fixed, bool)
        self.probability = (np.zeros(n, bool) if self.probability is None
                            else np.asarray(self.probability, bool))
        if not len(self.labels) == n == len(self.fixed) == len(self.probability):
            raise ValueError("labels, values, fixed and probability must have the same length")


class Blocks:
    """Builds a :class:`FreeParameters` vector block by block.

    Each ``add_*`` call appends a block's labels, estimates and boundary flags and returns a
    function that rebuilds the block's full tensor from the vector (differentiably), for the
    model's ``log_lik``.
    """

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.values: list[np.ndarray] = []
        self.fixed: list[np.ndarray] = []
        self.probability: list[np.ndarray] = []
        self._size = 0

    def _append(self, labels: list[str], values: np.ndarray, fixed: np.ndarray,
                probability: bool = False) -> slice:
        part = slice(self._size, self._size + len(values))
        self.labels += labels
        self.values.append(np.asarray(values, dtype=np.float64).reshape(-1))
        self.fixed.append(np.asarray(fixed, dtype=bool).reshape(-1))
        self.probability.append(np.full(len(values), probability))
        self._size += len(values)
        return part

    def add(self, name: str, value: torch.Tensor, labels: list[str] | None = None,
            non_negative: bool = False, scale: float | None = None
            ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A real-valued block: rebuilds a tensor of ``value``'s shape. With
        ``non_negative`` (variances, rates), an entry at or below :data:`BOUNDARY` times
        ``scale`` (default: the block's largest entry) is on the boundary (fixed): relative,
        so that data in other units give the same verdict."""
        value = value.detach().to(torch.float64)
        shape = tuple(value.shape)
        flat = value.reshape(-1).numpy()
        fixed = np.zeros(len(flat), bool)
        if non_negative:
            ref = float(np.max(flat)) if scale is None else float(scale)
            fixed = flat <= BOUNDARY * ref
        part = self._append(labels or block_labels(name, shape), flat, fixed)
        return lambda vec: vec[part].reshape(shape)

    def add_symmetric(self, name: str, value: torch.Tensor
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Symmetric matrices ``[..., D, D]``: the lower triangle (diagonal included) is free;
        labels ``name[..., i, j]`` with ``i >= j``."""
        value = value.detach().to(torch.float64)
        d = value.shape[-1]
        i, j = torch.tril_indices(d, d)
        lead = tuple(value.shape[:-2])
        tri = value[..., i, j]
        labels = [f"{name}[{','.join(str(a) for a in (*idx, int(r), int(c)))}]"
                  for idx in np.ndindex(*lead) for r, c in zip(i, j, strict=True)]
        part = self._append(labels, tri.reshape(-1).numpy(), np.zeros(tri.numel(), dtype=bool))

        off = i != j
        lower, upper = i * d + j, (j * d + i)[off]

        def rebuild(vec: torch.Tensor) -> torch.Tensor:
            flat = vec[part].reshape(*lead, len(i))
            out = torch.zeros(*lead, d * d, dtype=vec.dtype)
            out = out.index_add(-1, lower, flat).index_add(-1, upper, flat[..., off])
            return out.reshape(*lead, d, d)
        return rebuild

    def add_simplex(self, name: str, probs: torch.Tensor
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Probability vectors along the last axis of ``probs [..., K]``: every entry but each
        row's largest is free (labels ``name[..., k]``); entries below :data:`BOUNDARY` are
        on the boundary (fixed). Rebuilds ``[..., K]`` whose rows sum to one."""
        probs = probs.detach().to(torch.float64)
        ref = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).bool()
        free = ~ref
        labels = [lab for lab, f in zip(block_labels(name, tuple(probs.shape)),
                                        free.reshape(-1).tolist(), strict=True) if f]
        values = probs[free]
        part = self._append(labels, values.numpy(), (values < BOUNDARY).numpy(),
                            probability=True)
        zero = probs.masked_fill(~free, 0.0)

        def rebuild(vec: torch.Tensor) -> torch.Tensor:
            others = zero.masked_scatter(free, vec[part])
            full = others + ref * (1 - others.sum(-1, keepdim=True))
            # Entries on the boundary stay exactly where they are, and their (undefined)
            # derivative never reaches the free ones.
            return torch.where(free & (zero < BOUNDARY), zero, full)
        return rebuild

    def build(self, log_lik: Callable[[torch.Tensor], torch.Tensor],
              differentiable: bool = True) -> FreeParameters:
        """The vector of every block added, with ``log_lik`` of the full vector."""
        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return FreeParameters(self.labels, cat(self.values, float), log_lik, differentiable,
                              cat(self.fixed, bool), cat(self.probability, bool))


def observed_information(free: FreeParameters) -> np.ndarray:
    """Minus the Hessian of ``free.log_lik`` at ``free.values`` over the entries not fixed.

    Returns:
        ``[F, F]`` with F the number of entries not fixed.
    """
    theta = torch.tensor(free.values, dtype=torch.float64)
    active = torch.from_numpy(~free.fixed)
    start = theta[active]
    if start.numel() == 0:
        return np.zeros((0, 0))

    def f(v: torch.Tensor) -> torch.Tensor:
        return free.log_lik(theta.masked_scatter(active, v))

    if free.differentiable:
        hess = torch.autograd.functional.hessian(f, start, vectorize=True)
        return -hess.detach().numpy()
    x = start.numpy()
    k = len(x)

    def g(v: np.ndarray) -> float:
        try:
            return float(f(torch.from_numpy(v)))
        except ValueError:  # a step left the parameter space (a negative variance)
            return math.nan

    f0 = g(x)
    step = _steps(g, x, f0)
    hess = np.zeros((k, k))
    for a in range(k):
        for b in range(a, k):
            def at(s: float, t: float, a: int = a, b: int = b) -> float:
                v = x.copy()
                v[a] += s * step[a]
                v[b] += t * step[b]
                return g(v)
            if a == b:
                hess[a, a] = (at(1, 0) - 2 * f0 + at(-1, 0)) / step[a] ** 2
            else:
                hess[a, b] = hess[b, a] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (
                    4 * step[a] * step[b])
    return -hess


def _steps(g: Callable[[np.ndarray], float], x: np.ndarray, f0: float) -> np.ndarray:
    """Finite-difference steps of about 1e-3 standard errors per coordinate, whatever the
    parameter's units: each coordinate's curvature is probed from a relative step (shrunk
    while a step leaves the parameter space or is lost in rounding), and the step set to
    ``1e-3 / sqrt(curvature)``, never more than half the estimate's distance from zero."""
    out = np.empty(len(x))
    for a in range(len(x)):
        h = 1e-4 * abs(x[a]) if x[a] != 0 else 1e-4
        curv = math.nan
        for _ in range(40):
            v = x.copy()
            v[a] += h
            up = g(v)
            v[a] = x[a] - h
            down = g(v)
            curv = abs(up - 2 * f0 + down) / h ** 2
            if math.isfinite(curv) and curv > 0:
                break
            h = h / 10 if not math.isfinite(curv) else h * 10
        h = 1e-3 / math.sqrt(curv) if math.isfinite(curv) and curv > 0 else h
        out[a] = min(h, 0.5 * abs(x[a])) if x[a] != 0 else h
    return out
