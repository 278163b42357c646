"""Markov chains of any order over symbols ``0..V-1``, with sparse n-gram storage."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from probseq._utils import param_array
from probseq.base import SequenceModel
from probseq.data import Sequences, check_sequences, max_symbol
from probseq.markov import counting
from probseq.validation import probability_vectors

__all__ = ["MarkovChain"]

_SMOOTHINGS = ("modified-kneser-ney", "kneser-ney", "additive")
_DEFAULT_ALPHA = 0.5
#: the most (context state, symbol) pairs the missing-symbol forward pass may hold at a step.
MAX_MISSING_WORK = 4_000_000


class MarkovChain(SequenceModel):
    """A Markov chain of order k over V symbols.

    Generative process (``BOS`` pads the start, so the first k steps use shorter, start-of-
    sequence contexts)::

        for t in 1..T:
            h_t = (x_{t-k}, ..., x_{t-1})        # BOS where t - j < 1
            x_t ~ Categorical(p(. | h_t))

    The first k conditionals are therefore position-specific lower-order conditionals:
    ``p(x_1)``, ``p(x_2 | x_1)``, ..., ``p(x_k | x_1..x_{k-1})``, estimated from the first
    j symbols of each training sequence (the context ``(BOS, .., BOS, x_1, .., x_{j-1})`` is
    seen only at step j). This is the maximum-likelihood estimate of the joint (with
    ``alpha=0``) and the standard begin-of-sentence treatment of n-gram language models.
    Each conditional is a distribution over the V symbols, so the probabilities of all
    ``V**T`` sequences of a given length T sum to 1 (the length is given, not modelled).

    Smoothing (the default is interpolated modified Kneser-Ney):

    * ``"modified-kneser-ney"``: interpolated modified Kneser-Ney (Chen and Goodman 1998),
      the standard of n-gram language modelling. Each order m has three discounts ``D1``,
      ``D2``, ``D3+`` (for n-grams seen once, twice, three times or more) estimated from that
      order's count-of-counts (see
      :func:`probseq.markov.counting.modified_kneser_ney_discounts`). The order-k counts are
      raw counts; lower orders use continuation counts (the number of distinct symbols, BOS
      included, seen before the n-gram); the order-0 distribution is interpolated with the
      uniform one, so no probability is ever 0. A context never seen in training backs off
      to its longest seen suffix, in :meth:`log_prob` and in :meth:`sample` alike, so higher
      orders cost little where data is thin.
    * ``"kneser-ney"``: interpolated Kneser-Ney with one discount per order,
      ``D_m = n1 / (n1 + 2 n2)``; otherwise as above.
    * ``"additive"``: ``p(w | h) = (c(h, w) + alpha) / (c(h) + V alpha)`` on the order-k
      counts; a context never seen in training gives the uniform distribution (also with
      ``alpha=0``, where seen contexts give the maximum-likelihood estimate). This does not
      back off: past an unseen context an additive chain predicts (and samples) uniform
      noise, so high orders are much worse than low ones on held-out data.

    See :func:`probseq.markov.counting.conditional_probs` for the formulas.

    Storage is sparse: only observed n-grams and contexts, as sorted int64 keys (base
    ``V + 1`` numbers) looked up with ``np.searchsorted``. ``(V + 1) ** (k + 1)`` must stay
    below ``2**62``.

    Missing symbols (masked entries of a ``numpy.ma`` array, or ``pd.NA``) are marginalised
    exactly in :meth:`log_prob` by a forward pass over the possible contexts: after a missing
    symbol the chain's state is a distribution over the last k symbols (up to ``V**r``
    contexts, r the number of missing symbols among them), which collapses again once k
    observed symbols follow. :meth:`log_prob_steps` is 0 at a missing step and gives
    ``log p(x_t | observed x_<t)`` elsewhere. The pass is refused with a ``ValueError`` where
    it would hold more than ``MAX_MISSING_WORK`` = 4,000,000 (context, symbol) pairs at one
    step (e.g. V = 100 with 3 or more missing symbols within k >= 3 steps). :meth:`fit` on
    data with gaps counts only the n-grams whose k + 1 symbols are all observed (a
    complete-window estimate, not the maximum-likelihood estimate under the gaps).

    Args:
        order: k >= 0 (0 is an i.i.d. categorical model).
        num_symbols: V; inferred from the data when None.
        smoothing: ``"modified-kneser-ney"``, ``"kneser-ney"`` or ``"additive"``. None (the
            default) means ``"modified-kneser-ney"``, or ``"additive"`` when ``alpha`` is
            given.
        alpha: the additive pseudo-count (default 0.5, the Krichevsky-Trofimov estimator);
            only for ``"additive"``.
    """

    data_kind = "discrete"
    supports_missing: ClassVar[bool] = True

    def __init__(
        self,
        order: int = 1,
        num_symbols: int | None = None,
        smoothing: str | None = None,
        alpha: float | None = None,
    ):
        if smoothing is None:
            smoothing = "modified-kneser-ney" if alpha is None else "additive"
        if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
            raise ValueError(f"order must be a non-negative integer, got {order!r}")
        if num_symbols is not None and (
            isinstance(num_symbols, bool)
            or not isinstance(num_symbols, int | np.integer)
            or num_symbols < 1
        ):
            raise ValueError(f"num_symbols must be a positive integer, got {num_symbols!r}")
        if smoothing not in _SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {_SMOOTHINGS}, got {smoothing!r}")
        if smoothing != "additive" and alpha is not None:
            raise ValueError("alpha is the pseudo-count of additive smoothing; "
                             f"smoothing={smoothing!r} takes no alpha")
        if alpha is not None and not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.order = int(order)
        self.num_symbols = None if num_symbols is None else int(num_symbols)
        self._num_symbols_arg = self.num_symbols
        self.smoothing = smoothing
        self.alpha = alpha
        if self.num_symbols is not None:
            counting.check_key_space(self.num_symbols, self.order)
        self._tables: list[dict[str, np.ndarray] | None] | None = None
        self._discounts: np.ndarray | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_params(cls, initial: Any, transition: Any) -> MarkovChain:
        """A first-order chain with the given probabilities.

        Args:
            initial: ``[V]`` ``p(x_1)``.
            transition: ``[V, V]`` ``p(x_t = j | x_{t-1} = i)`` in row i, column j.

        Probabilities valid to rounding (see :func:`probseq.validation.probability_vectors`)
        are projected once: negative rounding set to 0, each vector divided by its sum.

        Raises:
            ValueError: wrong shapes, non-finite entries, negative entries beyond rounding,
                or a vector/row whose sum is not 1 within 1e-6.
        """
        init = param_array(initial, "initial")
        trans = param_array(transition, "transition")
        if init.ndim != 1 or init.shape[0] < 1:
            raise ValueError(f"initial must be a vector [V], got shape {init.shape}")
        v = init.shape[0]
        if trans.shape != (v, v):
            raise ValueError(
                f"transition must have shape [V, V] = ({v}, {v}) to match initial, "
                f"got {trans.shape}"
            )
        init = probability_vectors(init, "initial")
        trans = probability_vectors(trans, "transition")
        model = cls(order=1, num_symbols=v, smoothing="additive", alpha=0.0)
        rows = np.concatenate([trans, init[None, :]])  # context keys 0..V-1, then BOS = V
        ctx, sym = np.nonzero(rows)
        keys = ctx.astype(np.int64) * (v + 1) + sym
        model._tables = [None, counting.make_table(keys, rows[ctx, sym], v)]
        model._discounts = np.zeros((2, 3))
        return model

    def fit(self, data: Any, *, seed: int | None = None, progress: bool | None = None,
            **unknown: Any) -> MarkovChain:
        """Count the n-grams of ``data`` and estimate the smoothed conditionals.

        The fit is closed-form (counting); the smoothing is chosen in the constructor.

        Args:
            data: sequences of symbols ``0..V-1`` (a ``Sequences``, a list of sequences, or
                one sequence); every sequence needs at least one symbol.
            seed: accepted for a uniform interface; counting uses no randomness.
            progress: accepted for a uniform interface; counting shows no progress bar.
            **unknown: refused with a ``ValueError`` listing the valid options.

        Returns:
            self.
        """
        return super().fit(data, seed=seed, progress=progress, **unknown)

    def _fit(self, seqs: Sequences, *, seed: int | None = None, progress: bool | None = None
             ) -> None:
        values = np.ascontiguousarray(seqs.values.numpy())
        v = self._num_symbols_arg
        if v is None:
            v = max_symbol(seqs) + 1
        counting.check_key_space(v, self.order)
        base = v + 1
        lengths = seqs.lengths.numpy()
        space = base ** (self.order + 1)
        if not seqs.has_missing and counting.dense_key_space(space, int(lengths.sum())):
            from probseq.markov.compiled import count_ngrams_dense

            # The compiled count checks every symbol against V as it reads it.
            counted = count_ngrams_dense(values, lengths, self.order, v)
            if counted is None:
                check_sequences(seqs, model=self.name, num_symbols=v)  # raises, naming it
        else:
            if max_symbol(seqs) >= v:
                check_sequences(seqs, model=self.name, num_symbols=v)
            keys = counting.ngram_keys(values, lengths, self.order, v)
            if seqs.has_missing:
                keys = keys[_complete_windows(seqs, self.order)]
            counted = counting.count_keys(keys, space)
        top = counting.make_table(*counted, v)
        tables: list[dict[str, np.ndarray] | None] = [None] * (self.order + 1)
        tables[self.order] = top
        discounts = np.zeros((self.order + 1, 3))
        if self.smoothing != "additive":
            for m in range(self.order - 1, -1, -1):
                tables[m] = counting.continuation_table(tables[m + 1], m, v)
            for m in range(self.order + 1):
                counts = tables[m]["ngram_counts"]
                if self.smoothing == "modified-kneser-ney":
                    discounts[m] = counting.modified_kneser_ney_discounts(counts)
                else:
                    discounts[m] = counting.kneser_ney_discount(counts)
        self.num_symbols = v
        self._tables = tables
        self._discounts = discounts

    @property
    def discounts(self) -> torch.Tensor:
        """``[k + 1, 3]`` the Kneser-Ney discounts ``(D1, D2, D3+)`` of orders ``0..k``
        (row m: contexts of length m; all three equal for ``"kneser-ney"``; zeros for
        ``"additive"``)."""
        self._check_fitted()
        return torch.from_numpy(self._discounts.copy())

    # ---------------------------------------------------------------- probabilities
    @property
    def _alpha(self) -> float:
        return _DEFAULT_ALPHA if self.alpha is None else float(self.alpha)

    def _probs(self, contexts: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        return counting.conditional_probs(
            self._tables, contexts, symbols, self.num_symbols, self.smoothing,
            alpha=self._alpha, discounts=self._discounts,
        )

    def _next_distributions(self, top_contexts: np.ndarray) -> np.ndarray:
        """``[C, V]`` next-symbol distributions for C order-k context keys."""
        v, k = self.num_symbols, self.order
        base = v + 1
        contexts = np.repeat(top_contexts, v)
        all_orders = np.stack([contexts % base**m for m in range(k)] + [contexts])
        symbols = np.tile(np.arange(v, dtype=np.int64), top_contexts.shape[0])
        return self._probs(all_orders, symbols).reshape(-1, v)

    def _log_prob_steps(self, seqs: Sequences) -> torch.Tensor:
        return torch.from_numpy(self._steps(seqs))

    def _log_prob(self, seqs: Sequences) -> torch.Tensor:
        # A sequential sum, so trailing padding (exact zeros) cannot change a single bit.
        return torch.from_numpy(np.cumsum(self._steps(seqs), axis=1)[:, -1].copy())

    def _steps(self, seqs: Sequences) -> np.ndarray:
        values = np.ascontiguousarray(seqs.values.numpy())
        lengths = seqs.lengths.numpy()
        contexts, symbols = counting.context_keys(values, lengths, self.order, self.num_symbols)
        with np.errstate(divide="ignore"):
            logp = np.log(self._probs(contexts, symbols))
        mask = seqs.mask.numpy()
        out = np.zeros(values.shape, dtype=np.float64)
        out[mask] = logp
        if seqs.has_missing:
            observed = seqs.observed.numpy()
            for i in np.flatnonzero((mask & ~observed).any(axis=1)):
                self._marginalise(i, values[i, : lengths[i]], observed[i, : lengths[i]], out[i])
        return out

    def _marginalise(self, i: int, row: np.ndarray, observed: np.ndarray, out: np.ndarray,
                     predictive: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray] | None:
        """Overwrite ``out [T]`` around the missing symbols of one sequence by a forward pass.

        Only the missing steps and the k steps after each have uncertain contexts; every other
        step keeps its plain conditional. Each stretch of such steps (a cluster) starts from
        the one known context before it and ends where k observed symbols have followed.

        Args:
            predictive: ``[T, V]``; when given, its rows in the clusters are overwritten by
                ``p(x_t = . | observed x_<t)``.

        Returns:
            ``(context keys [C], probabilities [C])``: the distribution of the context after
            the last step when the last cluster reaches the end of the sequence, else None
            (the final context is then known).
        """
        k, v = self.order, self.num_symbols
        base, top = v + 1, (v + 1) ** k
        length = row.shape[0]
        missing = np.flatnonzero(~observed)
        clusters = []
        start, end = int(missing[0]), int(missing[0]) + k
        for t in missing[1:]:
            if t <= end:
                end = int(t) + k
            else:
                clusters.append((start, end))
                start, end = int(t), int(t) + k
        clusters.append((start, end))
        symbols_all = np.arange(v, dtype=np.int64)
        final = None
        for start, end in clusters:
            key = 0
            for j in range(start - k, start):
                key = key * base + (v if j < 0 else int(row[j]))
            states = np.array([key], dtype=np.int64)
            weights = np.ones(1)
            for t in range(start, min(end, length - 1) + 1):
                if predictive is not None:
                    predictive[t] = weights @ self._next_distributions(states)
                if not observed[t]:
                    if states.shape[0] * v > MAX_MISSING_WORK:
                        raise ValueError(
                            f"sequence {i}: marginalising its missing symbols exactly near "
                            f"step {t} needs {states.shape[0]} possible contexts x {v} symbols, "
                            f"more than MarkovChain's limit of {MAX_MISSING_WORK:,}; use a "
                            "lower order or fewer consecutive gaps"
                        )
                    probs = self._next_distributions(states)
                    new_w = (weights[:, None] * probs).reshape(-1)
                    new_s = ((states * base)[:, None] + symbols_all[None, :]).reshape(-1) % top
                    out[t] = 0.0
                else:
                    x = int(row[t])
                    contexts = np.stack([states % base**m for m in range(k)] + [states])
                    p = self._probs(contexts, np.full(states.shape, x, dtype=np.int64))
                    total = float(weights @ p)
                    if total <= 0.0:
                        out[t] = -np.inf  # the observed symbol is impossible: log p = -inf
                        break
                    out[t] = np.log(total)
                    new_w = weights * p / total
                    new_s = (states * base + x) % top
                keep = new_w > 0
                states, inverse = np.unique(new_s[keep], return_inverse=True)
                weights = np.bincount(inverse.reshape(-1), weights=new_w[keep],
                                      minlength=states.shape[0])
            if end >= length - 1:
                final = (states, weights)
        return final

    def conditional(self, context: Any = ()) -> torch.Tensor:
        """The distribution of the next symbol after ``context``.

        Args:
            context: the symbols ``x_1..x_L`` seen so far (any length; an empty context gives
                ``p(x_1)``). Only the last k matter once ``L >= k``; a shorter context is a
                start-of-sequence context.

        Returns:
            ``[V]`` float64 ``p(x_{L+1} = . | x_1..x_L)``.
        """
        self._check_fitted()
        v, k = self.num_symbols, self.order
        if len(context) == 0:
            ctx = np.zeros(0, dtype=np.int64)
        else:
            seqs, single = self._coerce(context)
            if not single:
                raise ValueError("context must be one sequence of symbols")
            ctx = seqs[0].numpy()
        last = np.concatenate([np.full(k, v, dtype=np.int64), ctx])[len(ctx):]
        key = 0
        for s in last:
            key = key * (v + 1) + int(s)
        return torch.from_numpy(self._next_distributions(np.array([key], dtype=np.int64))[0])

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Order 1: ``initial [V]`` and ``transition [V, V]`` (rows: from), smoothing applied.

        Raises:
            ValueError: for other orders (use :meth:`conditional`).
        """
        self._check_fitted()
        if self.order != 1:
            raise ValueError(
                f"params (initial, transition) exist for order 1; this chain has order "
                f"{self.order}: use conditional(context) for its next-symbol distributions"
            )
        v = self.num_symbols
        rows = torch.from_numpy(self._next_distributions(np.arange(v + 1, dtype=np.int64)))
        return {"initial": rows[v].clone(), "transition": rows[:v].clone()}

    # ---------------------------------------------------------------- sampling
    def _sample(self, num_sequences: int, length: int, prefix: torch.Tensor | None,
                **options: Any) -> torch.Tensor:
        if options:
            raise ValueError(f"MarkovChain.sample got unknown options {sorted(options)}")
        v, k = self.num_symbols, self.order
        base = v + 1
        history = np.full((num_sequences, k + length), v, dtype=np.int64)
        start = 0
        if prefix is not None:
            start = prefix.shape[0]
            history[:, k : k + start] = prefix.numpy()
        for t in range(start, length):
            key = np.zeros(num_sequences, dtype=np.int64)
            for j in range(k):
                key = key * base + history[:, t + j]
            unique, inverse = np.unique(key, return_inverse=True)
            cdf = np.cumsum(self._next_distributions(unique), axis=1)
            u = torch.rand(num_sequences, dtype=torch.float64).numpy()
            row = cdf[inverse.reshape(-1)]
            draw = (row <= (u * row[:, -1])[:, None]).sum(axis=1)
            history[:, k + t] = np.minimum(draw, v - 1)
        return torch.from_numpy(history[:, k:].copy())

    # ---------------------------------------------------------------- bookkeeping
    @property
    def num_params(self) -> int:
        """Free parameters, one definition at every order and for every smoothing.

        One categorical row over the symbols the training data uses per context seen in
        training (start-of-sequence contexts included)::

            num_params = (V_used - 1) * C_seen

        with ``V_used`` the number of distinct symbols in the training data and ``C_seen``
        the number of distinct order-k contexts. Order 0 counts ``V_used - 1``; a fully
        observed first-order chain over V symbols counts ``(V - 1)(V + 1)`` (every row of
        ``initial`` and ``transition``); the count never decreases with the order. Symbols
        of the alphabet that never occur, contexts never seen, the smoothing's lower-order
        tables and its discounts are not counted: they carry no free parameter of their own.
        For a chain built by :meth:`from_params`, ``V_used`` counts the symbols with a
        non-zero probability somewhere and every row is a seen context.
        """
        self._check_fitted()
        top = self._tables[self.order]
        used = np.unique(top["ngram_keys"] % (self.num_symbols + 1)).shape[0]
        return int((used - 1) * top["ctx_keys"].shape[0])

    def _is_fitted(self) -> bool:
        return self._tables is not None

    def get_config(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "num_symbols": self._num_symbols_arg,
            "smoothing": self.smoothing,
            "alpha": self.alpha,
        }

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"discounts": torch.from_numpy(self._discounts.copy())}
        for m, table in enumerate(self._tables):
            if table is not None:
                for field in ("ngram_keys", "ngram_counts"):
                    out[f"order{m}_{field}"] = torch.from_numpy(table[field].copy())
        return out

    def _meta(self) -> dict[str, Any]:
        return {"num_symbols": self.num_symbols}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.num_symbols = int(meta.get("num_symbols", self.num_symbols))
        v = self.num_symbols
        tables: list[dict[str, np.ndarray] | None] = []
        for m in range(self.order + 1):
            if f"order{m}_ngram_keys" in tensors:
                tables.append(counting.make_table(tensors[f"order{m}_ngram_keys"].numpy(),
                                                  tensors[f"order{m}_ngram_counts"].numpy(), v))
            else:
                tables.append(None)
        if tables[self.order] is None:
            raise KeyError(f"order{self.order}_ngram_keys")
        discounts = tensors["discounts"].numpy().astype(np.float64)
        if discounts.ndim == 1:  # files written when Kneser-Ney had one discount per order
            discounts = np.repeat(discounts[:, None], 3, axis=1)
        self._discounts = discounts
        self._tables = tables

    def memory_bytes(self) -> int:
        """Bytes held by the stored n-gram tables."""
        self._check_fitted()
        return sum(a.nbytes for t in self._tables if t is not None for a in t.values())

    # ---------------------------------------------------------------- Pyro
    def pyro_model(self, data: Any) -> None:
        """A Pyro model of a first-order chain with Dirichlet priors (for NUTS and SVI).

        Priors: ``initial ~ Dirichlet(1)`` over the V symbols and each row of
        ``transition ~ Dirichlet(1)`` (uniform on the simplex; override with
        ``probseq.BayesianModel(..., prior={"transition": ...})``). The likelihood is
        ``pyro.factor("log_lik", ...)`` of the counts of first symbols and of transitions,
        the exact joint ``sum n_i log initial_i + sum n_ij log transition_ij``.

        Args:
            data: fully observed sequences (any accepted input).

        Raises:
            ValueError: an order other than 1, or missing symbols.
        """
        import pyro
        import pyro.distributions as dist

        if self.order != 1:
            raise ValueError(f"MarkovChain.pyro_model is for order 1; this chain has order "
                             f"{self.order}")
        seqs, _ = self._coerce(data, fitting=not self._is_fitted())
        if seqs.has_missing:
            raise ValueError("MarkovChain.pyro_model needs fully observed sequences")
        v = self.num_symbols or self._fit_num_symbols(seqs)
        first, trans = transition_counts(seqs, v)
        f64 = torch.float64
        initial = pyro.sample("initial", dist.Dirichlet(torch.ones(v, dtype=f64)))
        transition = pyro.sample("transition",
                                 dist.Dirichlet(torch.ones(v, v, dtype=f64)).to_event(1))
        pyro.factor("log_lik", torch.xlogy(first, initial).sum()
                    + torch.xlogy(trans, transition).sum())

    # ---------------------------------------------------------------- forecasts
    def _step_predictive(self, seqs: Sequences) -> torch.distributions.Categorical:
        """``Categorical [N, T_max]``: ``p(x_t | context)`` at every step (uniform at padding)."""
        values = np.ascontiguousarray(seqs.values.numpy())
        contexts, _ = counting.context_keys(values, seqs.lengths.numpy(), self.order,
                                            self.num_symbols)
        unique, inverse = np.unique(contexts[self.order], return_inverse=True)
        rows = self._next_distributions(unique)[inverse.reshape(-1)]
        v = self.num_symbols
        probs = np.full((*values.shape, v), 1.0 / v)
        probs[seqs.mask.numpy()] = rows
        if seqs.has_missing:  # contexts with gaps: mixtures over the possible contexts
            mask, observed = seqs.mask.numpy(), seqs.observed.numpy()
            lengths = seqs.lengths.numpy()
            scratch = np.zeros(values.shape[1])
            for i in np.flatnonzero((mask & ~observed).any(axis=1)):
                n = lengths[i]
                self._marginalise(i, values[i, :n], observed[i, :n], scratch[:n], probs[i, :n])
        return torch.distributions.Categorical(probs=torch.from_numpy(probs))

    def _forecast(self, seqs: Sequences, horizon: int) -> torch.distributions.Categorical | None:
        """Exact h-step marginals by propagating the distribution over the last-k context.

        ``P(context_(h+1))`` is pushed through the next-symbol distributions one step at a
        time (contexts as sparse keys, merged at each step). Returns None (sampling is used
        instead) when the reachable contexts times V would exceed ``2**22``.
        """
        v, k = self.num_symbols, self.order
        base = v + 1
        keep = base ** (k - 1) if k > 0 else 1
        out = np.zeros((len(seqs), horizon, v))
        for i in range(len(seqs)):
            seq = seqs[i].numpy()
            last = np.concatenate([np.full(k, v, dtype=np.int64), seq])[len(seq):]
            key = 0
            for sym in last:
                key = key * base + int(sym)
            keys, weights = np.array([key], dtype=np.int64), np.ones(1)
            if seqs.has_missing:
                n = int(seqs.lengths[i])
                observed = seqs.observed[i, :n].numpy()
                if not observed.all():  # start from the filtered context distribution
                    final = self._marginalise(i, seq, observed, np.zeros(n))
                    if final is not None:
                        keys, weights = final
            for h in range(horizon):
                if keys.shape[0] * v > 2**22:
                    return None
                rows = self._next_distributions(keys)  # [C, V]
                joint = weights[:, None] * rows
                out[i, h] = joint.sum(0)
                if k == 0 or h + 1 == horizon:
                    continue
                new = (keys[:, None] % keep) * base + np.arange(v)[None, :]
                keys, inverse = np.unique(new.reshape(-1), return_inverse=True)
                weights = np.bincount(inverse.reshape(-1), weights=joint.reshape(-1),
                                      minlength=keys.shape[0])
        return torch.distributions.Categorical(probs=torch.from_numpy(out))


def transition_counts(seqs: Sequences, num_symbols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of first symbols ``[V]`` and of transitions ``[V, V]`` (rows: from) of fully
    observed sequences, float64."""
    v = num_symbols
    first = torch.bincount(seqs.values[:, 0], minlength=v).to(torch.float64)
    pairs = seqs.values[:, :-1] * v + seqs.values[:, 1:]
    keep = seqs.mask[:, 1:]
    trans = torch.bincount(pairs[keep], minlength=v * v).to(torch.float64).reshape(v, v)
    return first, trans


def _complete_windows(seqs: Sequences, order: int) -> np.ndarray:
    """``[sum(lengths)]`` bool, row-major over real steps: the n-gram ending at the step (its
    k + 1 symbols, BOS aside) has no missing symbol."""
    observed = seqs.observed.numpy() | ~seqs.mask.numpy()
    ok = observed.copy()
    for lag in range(1, order + 1):
        ok[:, lag:] &= observed[:, :-lag]
    return ok[seqs.mask.numpy()]
