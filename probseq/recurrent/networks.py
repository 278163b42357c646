"""The neural networks behind :class:`~probseq.recurrent.RecurrentModel`.

A :class:`SequenceNetwork` reads ``x_1..x_{t-1}`` (with a learned start input in place of
``x_0``) and emits, at every step t, the parameters of p(x_t | x_<t)::

    e_0 = start;  e_t = encode(x_t)              # embedding (symbols) or linear (reals)
    h_t = core(e_0, ..., e_{t-1})                # RNN/LSTM/GRU, or a causal transformer
    params_t = head(dropout(h_t))                # [P] parameters of the emission

Shapes: N sequences, T steps, D observation dimensions, V symbols, E input size,
H hidden size, P emission parameters.

Padding sits after the end of each sequence and every core is causal (an RNN reads left to
right, the transformer masks the future), so padded steps never influence real ones: the
networks run on the padded ``[N, T_max, ...]`` tensors without packing, and callers mask the
per-step results.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SequenceNetwork", "CausalTransformer", "RECURRENT_CELLS", "chrono_init_"]

RECURRENT_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

State = Any  # an RNN's hidden state (a tensor, or (h, c) for an LSTM); None for a transformer


def chrono_init_(core: nn.Module, max_length: int,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Chrono initialisation of an LSTM's or GRU's gate biases, in place (Tallec & Ollivier,
    "Can recurrent neural networks warp time?", ICLR 2018).

    Each hidden unit draws a characteristic time ``tau ~ Uniform(1, max_length - 1)`` and its
    "keep" gate gets the bias ``log(tau)``, so that at initialisation the unit forgets with a
    time constant of about ``tau`` steps instead of a few steps:

    - LSTM: forget-gate bias ``log(tau)``, input-gate bias ``-log(tau)``;
    - GRU (``h' = (1 - z) * n + z * h`` in torch): update-gate bias ``log(tau)``.

    The biases are written into ``bias_ih`` with the matching part of ``bias_hh`` set to zero
    (torch adds the two). A vanilla ``nn.RNN`` has no gates and is refused.

    Args:
        core: an ``nn.LSTM`` or ``nn.GRU``.
        max_length: T_max, the longest dependency the units should span at initialisation
            (at least 2).
        generator: the random source of ``tau`` (None: torch's global generator).

    Returns:
        ``core``.
    """
    if not isinstance(core, nn.LSTM | nn.GRU):
        raise ValueError(f"chrono initialisation needs an LSTM or GRU core, got {type(core)}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    h = core.hidden_size
    with torch.no_grad():
        for layer in range(core.num_layers):
            b_ih = getattr(core, f"bias_ih_l{layer}")
            b_hh = getattr(core, f"bias_hh_l{layer}")
            tau = 1.0 + torch.rand(h, generator=generator, dtype=torch.float64) * (max_length - 2)
            keep = torch.log(tau).to(b_ih.dtype)
            # LSTM gates are ordered (input, forget, cell, output); GRU's (reset, update, new).
            b_ih[h: 2 * h] = keep
            b_hh[h: 2 * h] = 0.0
            if isinstance(core, nn.LSTM):
                b_ih[:h] = -keep
                b_hh[:h] = 0.0
    return core


class CausalTransformer(nn.Module):
    """A small causal (decoder-only) transformer with learned positional embeddings.

    Pre-norm encoder layers (``norm_first=True``) with a causal mask and a final LayerNorm.
    Sequences longer than ``max_length`` are refused with ``ValueError``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, num_heads: int,
                 dropout: float, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.project = (
            nn.Identity() if input_size == hidden_size else nn.Linear(input_size, hidden_size)
        )
        self.position = nn.Embedding(max_length, hidden_size)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, dim_feedforward=4 * hidden_size, dropout=dropout,
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(hidden_size), enable_nested_tensor=False
        )

    def forward(self, inputs: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """``inputs [N, T, E]`` to outputs ``[N, T, H]``; ``state`` is unused (always None)."""
        t = inputs.shape[1]
        if t > self.max_length:
            raise ValueError(
                f"the transformer was built for sequences of at most max_length="
                f"{self.max_length} steps, got {t}; build RecurrentModel(max_length=...) larger"
            )
        positions = torch.arange(t, device=inputs.device)
        h = self.project(inputs) + self.position(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=h.device, dtype=h.dtype)
        return self.encoder(h, mask=mask, is_causal=True), None


class SequenceNetwork(nn.Module):
    """Input encoder, causal core and emission head.

    Args:
        cell: ``"rnn"``, ``"lstm"``, ``"gru"`` or ``"transformer"``.
        num_symbols: V for symbol input (an embedding), or None for real input.
        obs_dim: D for real input (ignored for symbols).
        embedding_dim: E; symbols default to H; reals default to feeding the D standardised
            values directly (RNN cells) or a linear map to H (transformer).
        hidden_size: H.
        num_layers: stacked RNN layers or transformer layers.
        dropout: between stacked layers and before the head.
        num_outputs: P, the emission's parameter count.
        num_heads: attention heads (transformer).
        max_length: the longest sequence the transformer accepts.
        num_exog: E_x, covariates joined to the input at every step (0: none).
    """

    def __init__(self, *, cell: str, num_symbols: int | None, obs_dim: int, embedding_dim: int
                 | None, hidden_size: int, num_layers: int, dropout: float, num_outputs: int,
                 num_heads: int = 4, max_length: int = 0, num_exog: int = 0):
        super().__init__()
        self.num_exog = num_exog
        if num_symbols is not None:
            size = embedding_dim or hidden_size
            self.encode: nn.Module = nn.Embedding(num_symbols, size)
            self.start = nn.Parameter(torch.randn(size))
        else:
            if embedding_dim is None and cell == "transformer":
                embedding_dim = hidden_size
            size = embedding_dim or obs_dim
            self.encode = nn.Identity() if embedding_dim is None else nn.Linear(obs_dim, size)
            self.start = nn.Parameter(torch.zeros(size))
        self.cell = cell
        size += num_exog  # covariates join the input at every step
        if cell == "transformer":
            self.core: nn.Module = CausalTransformer(
                size, hidden_size, num_layers, num_heads, dropout, max_length
            )
        else:
            self.core = RECURRENT_CELLS[cell](
                size, hidden_size, num_layers, batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            if cell == "lstm":  # forget gates start open (Jozefowicz et al., 2015)
                with torch.no_grad():
                    for layer in range(num_layers):
                        getattr(self.core, f"bias_ih_l{layer}")[hidden_size: 2 * hidden_size] = 1.0
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, T]`` symbols or ``[N, T, D]`` reals to inputs ``[N, T, E]``."""
        return self.encode(x)

    def run(self, inputs: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """Run the core on already embedded inputs ``[N, T, E]``; returns params ``[N, T, P]``."""
        h, state = self.core(inputs, state)
        return self.head(self.dropout(h)), state

    def start_inputs(self, n: int) -> torch.Tensor:
        """The start input for n sequences, ``[N, 1, E]``."""
        return self.start.expand(n, 1, -1)

    def inputs(self, x: torch.Tensor, previous: torch.Tensor | None = None,
               has_previous: torch.Tensor | None = None,
               exog: torch.Tensor | None = None) -> torch.Tensor:
        """The core's inputs for the steps of ``x``: ``[N, T, E (+ covariates)]``.

        Input t is the encoding of ``x_{t-1}`` (the start input, or ``previous``, at the
        first step), joined with the covariates of step t.

        Args:
            x: ``[N, T]`` symbols or ``[N, T, D]`` standardised reals.
            previous: ``[N]`` or ``[N, D]``, the observation just before ``x`` where ``x``
                continues a sequence (None: every row starts at t = 1).
            has_previous: ``[N]`` bool, the rows that read ``previous`` (None: all of them
                when ``previous`` is given).
            exog: ``[N, T, E_x]`` standardised covariates of the steps of ``x``.
        """
        e = self.embed(x)
        first = self.start_inputs(x.shape[0]).to(e.dtype)
        if previous is not None:
            before = self.embed(previous.unsqueeze(1)).to(e.dtype)
            first = before if has_previous is None else torch.where(
                has_previous[:, None, None], before, first)
        inputs = torch.cat([first, e[:, :-1]], dim=1)
        if self.num_exog:
            inputs = torch.cat([inputs, exog.to(inputs.dtype)], dim=-1)
        return inputs

    def forward(self, x: torch.Tensor, state: State = None,
                previous: torch.Tensor | None = None,
                exog: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """Parameters of p(x_t | x_<t) for every step of ``x``.

        Args:
            x: ``[N, T]`` symbols or ``[N, T, D]`` standardised reals.
            state: the RNN state after the step before ``x`` (None at the beginning).
            previous: the observation just before ``x`` (``[N]`` or ``[N, D]``) when ``x``
                continues a sequence; None means ``x`` starts at t = 1 (the start input).
            exog: ``[N, T, E_x]`` covariates of the steps of ``x`` (networks built with
                ``num_exog > 0``).

        Returns:
            ``(params [N, T, P], state)``, the state after reading ``x_1..x_{T-1}``.
        """
        return self.run(self.inputs(x, previous, exog=exog), state)
