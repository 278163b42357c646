"""Sparse n-gram counting and smoothed conditionals, as pure functions over numpy arrays.

Shapes use the letters of :mod:`probseq.base`: N sequences, T steps, V symbols. Q is a
number of (context, symbol) queries.

Encoding. Every sequence is preceded by ``k`` (the order) copies of a begin-of-sequence
symbol ``BOS = V``, so the alphabet of contexts has ``B = V + 1`` letters. The context of
length ``m`` of a position is the base-``B`` number of the ``m`` preceding (padded) symbols,
the most recent symbol being the least significant digit; an n-gram key is
``context_key * B + symbol``. Dropping the most significant digit of an n-gram key
(``key % B**(m+1)``) gives the n-gram of the next lower order, so lower-order tables are
derived from higher-order ones without going back to the data. Keys are int64, which bounds
``B ** (k + 1) < 2**62``.

A table of order ``m`` (context length ``m``) is a dict of sorted arrays:

* ``ngram_keys [G]`` int64 and ``ngram_counts [G]`` float64: the observed n-grams and their
  counts (raw counts, continuation counts for the lower orders of Kneser-Ney, or
  probabilities for a chain built from parameters);
* ``ctx_keys [C]`` int64, ``ctx_totals [C]`` float64 (sum of the counts over symbols),
  ``ctx_types [C]`` float64 (how many distinct symbols follow the context, ``N1+(h .)``) and
  ``ctx_n1 [C]``, ``ctx_n2 [C]`` float64 (how many follow it exactly once and exactly twice,
  ``N1(h .)`` and ``N2(h .)``, for modified Kneser-Ney).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_key_space",
    "ngram_keys",
    "context_keys",
    "count_keys",
    "dense_key_space",
    "make_table",
    "continuation_table",
    "kneser_ney_discount",
    "modified_kneser_ney_discounts",
    "conditional_probs",
]

#: key spaces up to this size are counted with a dense ``np.bincount`` rather than a sort.
_DENSE_LIMIT = 1 << 24
_MAX_KEY = 1 << 62


def check_key_space(num_symbols: int, order: int) -> None:
    """Refuse an (order, V) whose n-gram keys would overflow int64.

    Raises:
        ValueError: when ``(V + 1) ** (order + 1) >= 2**62``.
    """
    if (num_symbols + 1) ** (order + 1) >= _MAX_KEY:
        raise ValueError(
            f"order={order} with num_symbols={num_symbols} is too large: n-gram keys "
            f"(num_symbols + 1) ** (order + 1) must stay below 2**62 to fit in int64"
        )


def _padded(values: np.ndarray, order: int, bos: int) -> np.ndarray:
    """``[N, order + T_max]``: ``order`` BOS columns, then the values."""
    n, t_max = values.shape
    padded = np.empty((n, order + t_max), dtype=np.int64)
    padded[:, :order] = bos
    padded[:, order:] = values
    return padded


def _select(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return a.reshape(-1) if mask is None else a[mask]


def _real_mask(lengths: np.ndarray, t_max: int) -> np.ndarray | None:
    """``[N, T_max]`` bool mask of real steps, or None when every sequence is full."""
    if bool((lengths == t_max).all()):
        return None
    return np.arange(t_max)[None, :] < lengths[:, None]


def ngram_keys(values: np.ndarray, lengths: np.ndarray, order: int, num_symbols: int
               ) -> np.ndarray:
    """The order-``k`` n-gram key of every real step, in row-major order.

    Args:
        values: ``[N, T_max]`` int64 symbols (padding anything in ``0..V-1``).
        lengths: ``[N]`` int64.
        order: k, the context length.
        num_symbols: V.

    Returns:
        ``[sum(lengths)]`` int64 keys ``context_key * B + symbol``.
    """
    base = num_symbols + 1
    t_max = values.shape[1]
    mask = _real_mask(lengths, t_max)
    if order == 0:
        return _select(values, mask).astype(np.int64, copy=True)
    keys = np.empty(values.shape, dtype=np.int64)
    # Horner's scheme, oldest symbol first: key = (...(s_{t-k} B + s_{t-k+1}) B + ...) + s_t,
    # with s_j = BOS for j < 1.
    s = min(order, t_max)
    keys[:, :s] = num_symbols * base
    np.multiply(values[:, : t_max - s], base, out=keys[:, s:])
    for shift in range(order - 1, -1, -1):
        s = min(shift, t_max)
        keys[:, :s] += num_symbols
        keys[:, s:] += values[:, : t_max - s]
        if shift:
            keys *= base
    return _select(keys, mask)


def context_keys(values: np.ndarray, lengths: np.ndarray, order: int, num_symbols: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Context keys of every order ``0..k`` and the symbol at every real step.

    Returns:
        ``(contexts [k + 1, Q], symbols [Q])`` with Q = ``sum(lengths)``; ``contexts[m]`` is
        the key of the ``m`` symbols before each step (BOS-padded at the start).
    """
    base = num_symbols + 1
    t_max = values.shape[1]
    mask = _real_mask(lengths, t_max)
    symbols = _select(values, mask).astype(np.int64, copy=True)
    contexts = np.zeros((order + 1, symbols.shape[0]), dtype=np.int64)
    if order:
        padded = _padded(values, order, num_symbols)
        current = np.zeros(values.shape, dtype=np.int64)
        for m in range(1, order + 1):
            current += padded[:, order - m : order - m + t_max] * base ** (m - 1)
            contexts[m] = _select(current, mask)
    return contexts, symbols


def dense_key_space(key_space: int, num_keys: int) -> bool:
    """Whether ``num_keys`` keys of a space of ``key_space`` are counted in a dense table."""
    return key_space <= max(_DENSE_LIMIT // 4, min(_DENSE_LIMIT, 2 * num_keys))


def count_keys(keys: np.ndarray, key_space: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and how often each occurs.

    A dense ``np.bincount`` when the key space is small, a sort (``np.unique``) otherwise.

    Returns:
        ``(unique_keys [G] int64, counts [G] float64)``.
    """
    if dense_key_space(key_space, keys.shape[0]):
        counts = np.bincount(keys, minlength=key_space)
        nonzero = np.flatnonzero(counts)
        return nonzero.astype(np.int64), counts[nonzero].astype(np.float64)
    unique, counts = np.unique(keys, return_counts=True)
    return unique, counts.astype(np.float64)


def make_table(ngram_keys_: np.ndarray, ngram_counts: np.ndarray, num_symbols: int
               ) -> dict[str, np.ndarray]:
    """A table (see the module docstring) from sorted n-gram keys and their counts."""
    ctx = ngram_keys_ // (num_symbols + 1)
    if ctx.shape[0]:
        starts = np.flatnonzero(np.concatenate(([True], ctx[1:] != ctx[:-1])))
        totals = np.add.reduceat(ngram_counts, starts)
        types = np.diff(np.append(starts, ctx.shape[0])).astype(np.float64)
        n1 = np.add.reduceat((ngram_counts == 1).astype(np.float64), starts)
        n2 = np.add.reduceat((ngram_counts == 2).astype(np.float64), starts)
    else:
        starts = np.zeros(0, dtype=np.int64)
        totals = types = n1 = n2 = np.zeros(0, dtype=np.float64)
    return {
        "ngram_keys": ngram_keys_,
        "ngram_counts": ngram_counts,
        "ctx_keys": ctx[starts],
        "ctx_totals": totals,
        "ctx_types": types,
        "ctx_n1": n1,
        "ctx_n2": n2,
    }


def continuation_table(higher: dict[str, np.ndarray], order: int, num_symbols: int
                       ) -> dict[str, np.ndarray]:
    """Kneser-Ney table of order ``m`` from the table of order ``m + 1``.

    The count of an n-gram ``(h, w)`` of context length ``m`` is the number of distinct
    symbols (BOS included) seen just before it, ``N1+(. h w)``: the number of distinct
    order-``m + 1`` n-grams it is the suffix of.
    """
    base = num_symbols + 1
    suffixes = higher["ngram_keys"] % base ** (order + 1)
    keys, counts = count_keys(suffixes, base ** (order + 1))
    return make_table(keys, counts, num_symbols)


def kneser_ney_discount(counts: np.ndarray) -> float:
    """The discount ``D = n1 / (n1 + 2 n2)`` (Ney, Essen and Kneser 1994).

    ``n_r`` is the number of n-grams seen exactly r times. When there is no singleton
    (``n1 = 0``, so the formula gives 0 and unseen symbols would get no mass) D = 0.5.
    """
    n1 = float(np.count_nonzero(counts == 1))
    n2 = float(np.count_nonzero(counts == 2))
    if n1 == 0:
        return 0.5
    return n1 / (n1 + 2 * n2)


def modified_kneser_ney_discounts(counts: np.ndarray) -> np.ndarray:
    """The three discounts ``(D1, D2, D3+)`` of modified Kneser-Ney (Chen and Goodman 1998).

    With ``n_r`` the number of n-grams seen exactly r times and ``Y = n1 / (n1 + 2 n2)``::

        D1 = 1 - 2 Y n2 / n1,   D2 = 2 - 3 Y n3 / n2,   D3+ = 3 - 4 Y n4 / n3.

    A discount ``D_r`` the formula cannot give (a zero denominator: no n-gram seen r times,
    so ``D_r`` is never used on this data, or a value <= 0 on a small or unusual sample) is
    replaced by the single Kneser-Ney discount ``Y`` (0.5 when ``n1 = 0``); ``D_r`` is
    capped at r, so a count is never discounted below zero.

    Returns:
        ``[3]`` float64 ``(D1, D2, D3+)``, each in ``(0, r]``.
    """
    n1, n2, n3, n4 = (float(np.count_nonzero(counts == r)) for r in (1, 2, 3, 4))
    fallback = kneser_ney_discount(counts)
    y = n1 / (n1 + 2 * n2) if n1 else fallback
    out = np.empty(3)
    for i, (num, den) in enumerate(((n2, n1), (n3, n2), (n4, n3))):
        r = i + 1
        d = r - (r + 1) * y * num / den if den else fallback
        out[i] = min(d if d > 0 else fallback, float(r))
    return out


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(found [Q] bool, index [Q])`` of each query in a sorted key array."""
    if sorted_keys.shape[0] == 0:
        return np.zeros(queries.shape, dtype=bool), np.zeros(queries.shape, dtype=np.int64)
    index = np.searchsorted(sorted_keys, queries)
    np.minimum(index, sorted_keys.shape[0] - 1, out=index)
    return sorted_keys[index] == queries, index


def conditional_probs(
    tables: list[dict[str, np.ndarray] | None],
    contexts: np.ndarray,
    symbols: np.ndarray,
    num_symbols: int,
    smoothing: str,
    alpha: float = 0.0,
    discounts: np.ndarray | None = None,
) -> np.ndarray:
    """``p(symbol | context)`` for Q queries.

    Args:
        tables: one table per order ``0..k``; additive smoothing only reads ``tables[k]``.
        contexts: ``[k + 1, Q]`` context keys of every order (see :func:`context_keys`).
        symbols: ``[Q]`` symbols.
        num_symbols: V.
        smoothing: ``"additive"``: ``(c(h, w) + alpha) / (c(h) + V alpha)``, uniform for an
            unseen context ``h``. Otherwise interpolated (modified) Kneser-Ney,
            ``p_m(w | h) = max(c_m(h, w) - D_m(c), 0) / c_m(h) + gamma_m(h) p_{m-1}(w | h')``
            with ``D_m(c)`` the discount ``D1``, ``D2`` or ``D3+`` of a count c (0 for
            c = 0), ``gamma_m(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c_m(h)`` (the
            mass taken off, so each row sums to 1), ``h'`` the context without its oldest
            symbol, ``p_{-1} = 1 / V``, and ``p_m = p_{m-1}`` for a context unseen at order
            m (backing off to the longest seen suffix).
        alpha: the additive pseudo-count.
        discounts: ``[k + 1, 3]`` discounts ``(D1, D2, D3+)`` of each order (all three
            equal for plain Kneser-Ney).

    Returns:
        ``[Q]`` float64 probabilities.
    """
    base = num_symbols + 1
    top = len(tables) - 1
    if num_symbols == 1:
        return np.ones(symbols.shape)
    if smoothing == "additive":
        table = tables[top]
        probs = np.full(symbols.shape, 1.0 / num_symbols)
        found, idx = _lookup(table["ctx_keys"], contexts[top])
        if not found.any():
            return probs
        q = np.flatnonzero(found)
        seen, gidx = _lookup(table["ngram_keys"], contexts[top][q] * base + symbols[q])
        count = np.where(seen, table["ngram_counts"][gidx], 0.0)
        total = table["ctx_totals"][idx[q]]
        probs[q] = (count + alpha) / (total + num_symbols * alpha)
        return probs
    probs = np.full(symbols.shape, 1.0 / num_symbols)
    for m in range(top + 1):
        table = tables[m]
        found, idx = _lookup(table["ctx_keys"], contexts[m])
        q = np.flatnonzero(found)
        if q.shape[0] == 0:
            continue
        seen, gidx = _lookup(table["ngram_keys"], contexts[m][q] * base + symbols[q])
        count = np.where(seen, table["ngram_counts"][gidx], 0.0)
        i = idx[q]
        total, types = table["ctx_totals"][i], table["ctx_types"][i]
        n1, n2 = table["ctx_n1"][i], table["ctx_n2"][i]
        d1, d2, d3 = (float(x) for x in discounts[m])
        d = np.where(count >= 3, d3, np.where(count == 2, d2, np.where(count == 1, d1, 0.0)))
        backoff = d1 * n1 + d2 * n2 + d3 * (types - n1 - n2)
        probs[q] = (np.maximum(count - d, 0.0) + backoff * probs[q]) / total
    return probs
