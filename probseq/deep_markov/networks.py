"""Neural networks of the deep Markov model (Krishnan, Shalit and Sontag, 2017).

The building blocks follow Pyro's DMM example (``examples/dmm.py``): a gated transition
``p(z_t | z_(t-1))``, an emitter ``p(x_t | z_t)`` (here Gaussian for real data) and, for the
guide, a combiner ``q(z_t | z_(t-1), h_t)`` where ``h_t`` is the state of an RNN run
backwards over ``x_t..x_T``. Shapes use the letters of :mod:`probseq.base`: S latent
dimensions, D observation dimensions, H hidden units; every module broadcasts over leading
batch axes (particles, sequences, time).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import softplus

__all__ = ["Emitter", "GatedTransition", "Combiner", "BackwardRNN", "DMMNetwork", "MIN_SCALE"]

#: added to every softplus scale so that densities stay bounded (in standardised units).
MIN_SCALE = 1e-4


def _scale(pre: torch.Tensor) -> torch.Tensor:
    return softplus(pre) + MIN_SCALE


class Emitter(nn.Module):
    """Gaussian emission ``p(x_t | z_t) = N(loc(z_t), diag(scale(z_t)^2))``.

    ``loc`` is a linear map of ``z`` plus a two-layer MLP, so the linear-Gaussian
    state-space model is the special case where the MLP's output layer is zero; ``scale``
    is a softplus of the MLP's hidden layer (a constant when those weights are zero).
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(latent_dim, hidden_dim)
        self.lin_hidden_to_hidden = nn.Linear(hidden_dim, hidden_dim)
        self.lin_hidden_to_loc = nn.Linear(hidden_dim, obs_dim)
        self.lin_hidden_to_scale = nn.Linear(hidden_dim, obs_dim)
        self.lin_z_to_loc = nn.Linear(latent_dim, obs_dim, bias=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z [..., S]`` to ``(loc, scale)``, each ``[..., D]``."""
        h = torch.relu(self.lin_hidden_to_hidden(torch.relu(self.lin_z_to_hidden(z))))
        loc = self.lin_z_to_loc(z) + self.lin_hidden_to_loc(h)
        return loc, _scale(self.lin_hidden_to_scale(h))


class GatedTransition(nn.Module):
    """Gated transition ``p(z_t | z_(t-1)) = N(loc, diag(scale^2))`` of the Pyro DMM.

    ``loc = (1 - g) * (W z + b) + g * m(z)`` with a sigmoid gate ``g(z)`` and a nonlinear
    proposed mean ``m(z)``; ``scale = softplus(V relu(m(z)) + c)``. The linear part starts
    as the identity.
    """

    def __init__(self, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(latent_dim, hidden_dim)
        self.lin_gate_hidden_to_z = nn.Linear(hidden_dim, latent_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(latent_dim, hidden_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(hidden_dim, latent_dim)
        self.lin_sig = nn.Linear(latent_dim, latent_dim)
        self.lin_z_to_loc = nn.Linear(latent_dim, latent_dim)
        with torch.no_grad():
            self.lin_z_to_loc.weight.copy_(torch.eye(latent_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_prev [..., S]`` to ``(loc, scale)``, each ``[..., S]``."""
        gate_hidden = torch.relu(self.lin_gate_z_to_hidden(z_prev))
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(gate_hidden))
        proposed = self.lin_proposed_mean_hidden_to_z(
            torch.relu(self.lin_proposed_mean_z_to_hidden(z_prev))
        )
        loc = (1 - gate) * self.lin_z_to_loc(z_prev) + gate * proposed
        return loc, _scale(self.lin_sig(torch.relu(proposed)))


class Combiner(nn.Module):
    """Guide step ``q(z_t | z_(t-1), x_t..x_T) = N(loc, diag(scale^2))`` of the Pyro DMM."""

    def __init__(self, latent_dim: int, rnn_dim: int):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(latent_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, latent_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, latent_dim)

    def forward(self, z_prev: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_prev [..., S]`` and RNN state ``h [..., R]`` to ``(loc, scale)`` ``[..., S]``."""
        combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_prev)) + h)
        return self.lin_hidden_to_loc(combined), _scale(self.lin_hidden_to_scale(combined))


class BackwardRNN(nn.Module):
    """A GRU run from the end of each sequence to its start.

    ``h[:, t]`` summarises ``x_t..x_(L-1)`` of a sequence of length L; padding is never read
    (packed sequences), so it cannot change a result.
    """

    def __init__(self, obs_dim: int, rnn_dim: int):
        super().__init__()
        self.rnn = nn.GRU(obs_dim, rnn_dim, batch_first=True)
        self.h_0 = nn.Parameter(torch.zeros(rnn_dim))

    def forward(self, y: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``y [N, T, D]`` and ``lengths [N]`` to ``h [N, T, R]`` (zero at padded steps)."""
        n, t_max, _ = y.shape
        rev = reverse_padded(y, lengths)
        packed = nn.utils.rnn.pack_padded_sequence(
            rev, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        h_0 = self.h_0.expand(1, n, self.h_0.shape[0]).contiguous()
        out, _ = self.rnn(packed, h_0)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t_max)
        return reverse_padded(out, lengths)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x [N, T, ...]`` within its length; padded steps stay in place."""
    t = torch.arange(x.shape[1], device=x.device)
    lens = lengths.to(x.device)[:, None]
    idx = torch.where(t[None, :] < lens, lens - 1 - t[None, :], t[None, :])
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2)).expand_as(x)
    return torch.gather(x, 1, idx)


class DMMNetwork(nn.Module):
    """Every trainable tensor of a deep Markov model and its guide.

    Generative model (``emitter``, ``transition``, ``initial_loc``, ``initial_scale_raw``)::

        z_1 ~ N(initial_loc, softplus(initial_scale_raw))
        z_t ~ N(transition(z_(t-1)))            for t = 2..T
        x_t ~ N(emitter(z_t))                   for t = 1..T

    Guide (``rnn``, ``combiner``, ``guide_z_0``)::

        h = rnn(x) (backwards);  z_0 = guide_z_0;  z_t ~ N(combiner(z_(t-1), h_t))
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int, rnn_dim: int):
        super().__init__()
        self.emitter = Emitter(obs_dim, latent_dim, hidden_dim)
        self.transition = GatedTransition(latent_dim, hidden_dim)
        self.initial_loc = nn.Parameter(torch.zeros(latent_dim))
        # softplus(0.5413) = 1: a unit-scale prior on z_1 at initialisation.
        self.initial_scale_raw = nn.Parameter(torch.full((latent_dim,), 0.5413))
        self.rnn = BackwardRNN(obs_dim, rnn_dim)
        self.combiner = Combiner(latent_dim, rnn_dim)
        self.guide_z_0 = nn.Parameter(torch.zeros(latent_dim))

    @property
    def latent_dim(self) -> int:
        return self.initial_loc.shape[0]

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of ``p(z_1)``, each ``[S]``."""
        return self.initial_loc, _scale(self.initial_scale_raw)

    def generative_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``p(x, z)`` (the guide's are left out)."""
        return [
            *self.emitter.parameters(),
            *self.transition.parameters(),
            self.initial_loc,
            self.initial_scale_raw,
        ]
