"""Ragged batches of sequences and the checks every input passes on its way in.

Shapes use the letters of :mod:`probseq.base`: N sequences, T steps (``T_max`` the longest),
D observation dimensions, V symbols.

A :class:`Sequences` holds ``values`` padded to ``[N, T_max]`` (symbols, int64, or univariate
reals, float64) or ``[N, T_max, D]`` (multivariate reals, float64) and ``lengths [N]``; the
mask is derived from the lengths. Padding is always stored as zeros, so padding never changes
a result.

Missing values: a missing real is ``NaN``; a missing symbol is a masked entry of a
``numpy.ma.MaskedArray`` or ``pd.NA`` in a pandas nullable-integer Series. A batch keeps an
``observed`` mask beside its lengths (padding stays separate from missingness); missing
entries are stored as zeros, like padding, so no ``NaN`` ever reaches a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

DataKind = Literal["discrete", "count", "continuous"]

__all__ = ["Sequences", "as_sequences", "as_exog", "check_sequences", "DataKind"]


def _describe(x: Any) -> str:
    return type(x).__name__


def _to_numpy(x: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One sequence as a numpy array, and its missing entries (``None`` when there are none).

    Missing entries (NaN reals, masked or ``pd.NA`` symbols) are set to 0 in the returned
    array, which is always a fresh copy where it differs from the caller's data.
    """
    if isinstance(x, Sequences):
        raise ValueError(
            f"sequence {index} is itself a Sequences batch; pass the batch directly "
            "or use Sequences.to_list()"
        )
    if isinstance(x, str | bytes):
        raise ValueError(
            f"sequence {index} is a string; encode it as symbols first "
            "(for example probseq.datasets.encode_text)"
        )
    if isinstance(x, Mapping):
        raise ValueError(
            f"sequence {index} is a {_describe(x)}; pass arrays, lists or pandas Series, not a "
            "mapping (for a dict of sequences pass list(d.values()))"
        )
    missing = None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif isinstance(x, np.ma.MaskedArray):
        missing = np.ma.getmaskarray(x).copy()
        x = x.filled(0) if x.dtype.kind in "iub" else x.filled(np.nan)
    elif hasattr(x, "to_numpy") and callable(x.to_numpy):  # pandas Series / DataFrame
        x = _pandas_to_numpy(x)
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"sequence {index} could not be read as an array: {err}") from None
    if arr.dtype == object:
        # A list holding numbers of mixed Python types (or None / pd.NA for a gap) is fine.
        flat = arr.ravel().tolist()
        gaps = np.array([_is_na(v) for v in flat], dtype=bool).reshape(arr.shape)
        try:
            vals = np.asarray([0 if g else v for v, g in zip(flat, gaps.ravel(), strict=True)])
            vals = vals.reshape(arr.shape)
            if vals.dtype == object or vals.dtype.kind not in "iufb":
                vals = vals.astype(float)
        except (ValueError, TypeError):
            raise ValueError(
                f"sequence {index} holds non-numeric values ({_describe(x)} of objects); "
                "sequences must be numbers"
            ) from None
        arr = vals
        if gaps.any():
            missing = gaps if missing is None else missing | gaps
    if arr.dtype.kind in "USV":
        raise ValueError(
            f"sequence {index} holds strings ({arr.dtype}); encode them as integer symbols first"
        )
    if arr.dtype.kind == "c":
        raise ValueError(f"sequence {index} holds complex numbers; probseq models real data")
    if arr.dtype.kind == "b":
        raise ValueError(
            f"sequence {index} holds booleans; symbols must have an integer dtype "
            "(use .astype(int))"
        )
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"sequence {index} has unsupported dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            missing = nan if missing is None else missing | nan
    if missing is not None:
        if missing.shape != arr.shape:
            missing = np.broadcast_to(missing, arr.shape)
        if missing.any():
            arr = np.where(missing, np.zeros((), dtype=arr.dtype), arr)
        else:
            missing = None
    return arr, missing


def _is_na(v: Any) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd

        return v is pd.NA or v is pd.NaT
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def _pandas_to_numpy(x: Any) -> np.ndarray:
    """A pandas Series/DataFrame as numpy; nullable integers keep their NA as a masked array."""
    dtypes = [x.dtype] if hasattr(x, "dtype") else list(getattr(x, "dtypes", []))
    nullable_int = any(getattr(d, "kind", "") in "iu" and hasattr(d, "na_value") for d in dtypes)
    if nullable_int:
        na = np.asarray(x.isna())
        if na.any():
            return np.ma.MaskedArray(x.fillna(0).to_numpy(dtype=np.int64), mask=na)
        return x.to_numpy(dtype=np.int64)
    return x.to_numpy()


def _check_one(arr: np.ndarray, index: int, symbols: bool, sign: bool = True) -> None:
    """Checks of one sequence (``sign`` False: its symbols' sign is checked elsewhere)."""
    if arr.ndim == 0:
        raise ValueError(f"sequence {index} is a scalar, not a sequence")
    if arr.ndim > 2:
        raise ValueError(
            f"sequence {index} has {arr.ndim} dimensions; a sequence is 1-D [T] or 2-D [T, D]"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"sequence {index} is empty")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"sequence {index} has zero observation dimensions")
    if arr.dtype.kind == "f":
        bad = np.isinf(arr)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"sequence {index} contains inf (first infinite value at step {step}); "
                "a missing value is NaN"
            )
    elif symbols:
        if arr.ndim != 1:
            raise ValueError(
                f"sequence {index} is a 2-D integer array {tuple(arr.shape)}; symbol sequences "
                "are 1-D (for multivariate real data pass floats)"
            )
        if sign and arr.size and arr.min() < 0:
            step = int(np.argmax(arr < 0))
            raise ValueError(
                f"sequence {index} contains a negative symbol {int(arr[step])} at step {step}; "
                "symbols are 0..V-1"
            )
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            step = int(np.argmax(arr > np.iinfo(np.int64).max))
            raise ValueError(
                f"sequence {index} contains symbol {int(arr[step])} at step {step}, too large "
                "for a symbol index (symbols are 0..V-1)"
            )


#: the fewest values from which :meth:`Sequences.from_list` copies by parallel threads.
_PARALLEL_FILL = 1 << 22
_FILL_CHUNK = 1 << 18


def _fill(values: np.ndarray, arrays: list[np.ndarray], sign: bool) -> int | None:
    """``values[i, :T_i] = arrays[i]`` in chunks shared by parallel threads (NumPy releases
    the GIL while it copies; one core alone does not reach the memory's bandwidth), with
    each chunk's minimum taken while it is in cache when ``sign``. Returns the first
    sequence holding a negative value, or None."""
    from probseq._parallel import PARTS_PER_THREAD, balanced_cuts, num_threads, run_parts

    pieces = [(i, lo, min(lo + _FILL_CHUNK, a.shape[0]))
              for i, a in enumerate(arrays) for lo in range(0, a.shape[0], _FILL_CHUNK)]
    lowest = np.zeros(len(pieces))

    def copy(p0: int, p1: int) -> None:
        for p in range(p0, p1):
            i, lo, hi = pieces[p]
            part = arrays[i][lo:hi]
            if sign:
                lowest[p] = part.min()
            values[i, lo:hi] = part

    sizes = np.array([hi - lo for _, lo, hi in pieces], dtype=np.float64)
    run_parts(copy, balanced_cuts(sizes, PARTS_PER_THREAD * num_threads()))
    bad = np.nonzero(lowest < 0)[0]
    return pieces[bad[0]][0] if bad.size else None


class Sequences:
    """A ragged batch of N sequences, stored padded.

    Attributes:
        values: ``[N, T_max]`` int64 symbols or float64 reals, or ``[N, T_max, D]`` float64.
            Padding and missing entries are stored as zero.
        lengths: ``[N]`` int64, the single source of truth for where each sequence ends.
        observed: bool, the shape of ``values``: True where a value is present (False at
            missing values and at padding).

    Build one with :meth:`from_list` or :meth:`from_padded`; both validate their input and
    copy it, so nothing the caller passed is modified or aliased. ``Sequences(values,
    lengths)`` validates too (lengths in ``1..T_max``, non-negative symbols, no inf; NaN
    reals inside the lengths are missing values).
    """

    __slots__ = ("values", "lengths", "_observed", "_index")

    def __init__(
        self, values: Any, lengths: Any, observed: torch.Tensor | None = None
    ) -> None:
        values = _as_tensor(values, "values")
        lengths = _as_tensor(lengths, "lengths")
        if values.dim() not in (2, 3):
            raise ValueError(
                f"values must have shape [N, T_max] or [N, T_max, D], got {tuple(values.shape)}"
            )
        if lengths.is_floating_point() or lengths.dtype == torch.bool or lengths.is_complex():
            raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
        n, t_max = values.shape[:2]
        if lengths.shape != (n,):
            raise ValueError(f"lengths has shape {tuple(lengths.shape)}, expected ({n},)")
        lengths = lengths.to(torch.int64)
        bad = torch.nonzero((lengths < 1) | (lengths > t_max))
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"sequence {i} has length {int(lengths[i])}, outside 1..{t_max}")
        if values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"values have unsupported dtype {values.dtype}")
        mask = torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]
        vmask = mask if values.dim() == 2 else mask.unsqueeze(-1)
        if values.is_floating_point():
            if values.dtype != torch.float64:
                values = values.to(torch.float64)
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                inf = torch.isinf(values) & vmask
                if inf.any():
                    i, t = (int(v) for v in torch.nonzero(inf)[0][:2])
                    raise ValueError(f"sequence {i} contains inf at step {t}")
                nan = torch.isnan(values) & vmask
                if nan.any():
                    observed = ~nan if observed is None else observed & ~nan
                values = torch.where(finite, values, torch.zeros((), dtype=values.dtype))
        else:
            if values.dtype != torch.int64:
                if values.dtype == torch.uint64 and bool((values > 2**63 - 1).any()):
                    raise ValueError("values hold a symbol too large for a symbol index")
                values = values.to(torch.int64)
            neg = (values < 0) & vmask
            if neg.any():
                i, t = (int(v) for v in torch.nonzero(neg)[0][:2])
                raise ValueError(
                    f"sequence {i} contains a negative symbol {int(values[i, t])} at step {t}; "
                    "symbols are 0..V-1"
                )
        pad = ~vmask.expand_as(values)
        if bool((values[pad] != 0).any()):
            values = values.masked_fill(pad, 0)  # a copy: the caller's tensor is untouched
        if observed is not None:
            observed = _as_tensor(observed, "observed").to(torch.bool)
            if observed.shape != values.shape:
                raise ValueError(
                    f"observed has shape {tuple(observed.shape)}, expected {tuple(values.shape)}"
                )
            observed = observed & vmask.expand_as(values)
            if bool((observed | pad).all()):
                observed = None  # nothing is missing
            else:
                values = values.masked_fill(~observed, 0)
        self.values = values
        self.lengths = lengths
        self._observed = observed

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_list(cls, sequences: Iterable[Any], kind: DataKind | None = None) -> Sequences:
        """Pad a list of sequences (arrays, tensors, lists or pandas Series).

        Args:
            sequences: N sequences, each ``[T_i]`` or ``[T_i, D]``. Missing values: NaN for
                reals, masked entries (``numpy.ma``) or ``pd.NA`` for symbols.
            kind: ``"discrete"``/``"count"`` requires integer symbols, ``"continuous"``
                promotes integers to float64; ``None`` infers (all integer means discrete).

        Raises:
            ValueError: naming the offending sequence.
        """
        if isinstance(sequences, str | bytes):
            raise ValueError("a string is not a list of sequences; encode it as symbols first")
        if isinstance(sequences, Mapping):
            raise ValueError(
                f"a {_describe(sequences)} is not a list of sequences; pass "
                "list(d.values()) for a dict of sequences"
            )
        pairs = [_to_numpy(s, i) for i, s in enumerate(sequences)]
        if not pairs:
            raise ValueError("no sequences were given (an empty list)")
        arrays = [a for a, _ in pairs]
        gaps = [m for _, m in pairs]
        is_float = [a.dtype.kind == "f" for a in arrays]
        if kind is None:
            kind = "continuous" if any(is_float) else "discrete"
        # Large inputs are copied (and their symbols' sign checked) by parallel threads.
        large = sum(a.size for a in arrays) >= _PARALLEL_FILL
        for i, a in enumerate(arrays):
            _check_one(a, i, symbols=kind != "continuous", sign=not large)
        if kind in ("discrete", "count"):
            for i, f in enumerate(is_float):
                if f:
                    raise ValueError(
                        f"sequence {i} has float values but symbols are expected; symbols must "
                        "have an integer dtype (use .astype(int) if they are whole numbers; "
                        "mark missing symbols with numpy.ma or pandas' Int64 dtype, not NaN)"
                    )
        ndims = {a.ndim for a in arrays}
        if len(ndims) > 1:
            i = next(i for i, a in enumerate(arrays) if a.ndim != arrays[0].ndim)
            raise ValueError(
                f"sequence {i} is {arrays[i].ndim}-D but sequence 0 is {arrays[0].ndim}-D; "
                "all sequences need the same dimension"
            )
        if arrays[0].ndim == 2:
            dims = [a.shape[1] for a in arrays]
            for i, d in enumerate(dims):
                if d != dims[0]:
                    raise ValueError(
                        f"sequence {i} has D={d} but sequence 0 has D={dims[0]}; "
                        "all sequences need the same observation dimension"
                    )
        lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        t_max = int(lengths.max())
        dtype = np.float64 if kind == "continuous" else np.int64
        shape = (len(arrays), t_max) + (arrays[0].shape[1:] if kind == "continuous" else ())
        if len(arrays) == 1 and not large:  # no padding: one copy, no zeros first
            values = np.array(arrays[0], dtype=dtype)[None]
        else:
            values = np.zeros(shape, dtype=dtype)
            if large:
                negative = _fill(values, arrays, sign=kind != "continuous")
                if negative is not None:
                    _check_one(arrays[negative], negative, symbols=True)  # raises, naming it
            else:
                for i, a in enumerate(arrays):
                    values[i, : a.shape[0]] = a
        observed = None
        if any(g is not None for g in gaps):
            observed = np.zeros(shape, dtype=bool)
            for i, (a, g) in enumerate(zip(arrays, gaps, strict=True)):
                observed[i, : a.shape[0]] = True if g is None else ~g
            observed = torch.from_numpy(observed)
        out = cls.__new__(cls)  # already validated: skip the constructor's checks
        out.values = torch.from_numpy(values)
        out.lengths = torch.from_numpy(lengths)
        out._observed = observed
        return out

    @classmethod
    def from_padded(
        cls, values: Any, lengths: Any | None = None, kind: DataKind | None = None
    ) -> Sequences:
        """Wrap an already padded array.

        Args:
            values: ``[N, T_max]`` or ``[N, T_max, D]``. Values past each length are ignored
                (they may be anything, NaN included); NaN inside a length is a missing value.
            lengths: ``[N]`` integers in ``1..T_max``; ``None`` means every row is full.
            kind: as in :meth:`from_list`.
        """
        arr, gaps = _to_numpy(values, 0)
        if arr.ndim not in (2, 3):
            raise ValueError(
                f"from_padded needs values of shape [N, T_max] or [N, T_max, D], got {arr.shape}"
            )
        n, t_max = arr.shape[:2]
        lens = _check_lengths(lengths, n, t_max)
        rows = []
        for i in range(n):
            row = arr[i, : lens[i]]
            if gaps is not None and gaps[i, : lens[i]].any():
                g = gaps[i, : lens[i]]
                row = np.ma.MaskedArray(row, mask=g) if row.dtype.kind in "iu" else (
                    np.where(g, np.nan, row)
                )
            rows.append(row)
        return cls.from_list(rows, kind=kind)

    @classmethod
    def from_concatenated(cls, x: Any, lengths: Sequence[int], kind: DataKind | None = None):
        """hmmlearn's format: all sequences concatenated along time, plus their lengths."""
        arr, gaps = _to_numpy(x, 0)
        if arr.ndim == 0:
            raise ValueError("x is a scalar, not concatenated sequences")
        lens = _check_lengths(lengths, None, arr.shape[0])
        if lens.sum() != arr.shape[0]:
            raise ValueError(f"lengths sum to {int(lens.sum())} but x has {arr.shape[0]} steps")
        if gaps is not None:
            arr = np.ma.MaskedArray(arr, mask=gaps) if arr.dtype.kind in "iu" else (
                np.where(gaps, np.nan, arr)
            )
        return cls.from_list(np.split(arr, np.cumsum(lens)[:-1]), kind=kind)

    # -- views --------------------------------------------------------------------------------
    @property
    def mask(self) -> torch.Tensor:
        """``[N, T_max]`` bool, True at real (unpadded) steps."""
        t = torch.arange(self.values.shape[1], device=self.lengths.device)
        return t[None, :] < self.lengths[:, None]

    @property
    def observed(self) -> torch.Tensor:
        """Bool, the shape of ``values``: True where a value is present (not missing, not
        padding)."""
        if self._observed is not None:
            return self._observed
        m = self.mask
        return m if self.values.dim() == 2 else m.unsqueeze(-1).expand_as(self.values)

    @property
    def has_missing(self) -> bool:
        """True when some value inside the lengths is missing."""
        return self._observed is not None

    @property
    def step_observed(self) -> torch.Tensor:
        """``[N, T_max]`` bool: every coordinate of the step is observed."""
        obs = self.observed
        return obs if obs.dim() == 2 else obs.all(-1)

    @property
    def step_any_observed(self) -> torch.Tensor:
        """``[N, T_max]`` bool: at least one coordinate of the step is observed (the step
        contributes to the likelihood)."""
        obs = self.observed
        return obs if obs.dim() == 2 else obs.any(-1)

    @property
    def num_observed(self) -> int:
        """Number of steps with at least one observed value (``num_steps`` without gaps)."""
        if self._observed is None:
            return self.num_steps
        return int(self.step_any_observed.sum())

    @property
    def is_discrete(self) -> bool:
        return not self.values.is_floating_point()

    @property
    def dim(self) -> int | None:
        """D for multivariate data, ``None`` for univariate reals and symbols."""
        return self.values.shape[2] if self.values.ndim == 3 else None

    @property
    def max_length(self) -> int:
        return self.values.shape[1]

    @property
    def num_steps(self) -> int:
        """Total number of real time steps, ``sum(lengths)``."""
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor):
        """``seqs[i]`` is the i-th sequence unpadded; a slice or index list gives a batch."""
        if isinstance(index, int | np.integer):
            i = int(index)
            return self.values[i, : int(self.lengths[i])]
        idx = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index)
        lengths = self.lengths[idx]
        t_max = int(lengths.max()) if lengths.numel() else 0
        out = Sequences.__new__(Sequences)  # a sub-batch of a valid batch is valid
        out.values = self.values[idx, :t_max].clone()
        out.lengths = lengths.clone()
        obs = None if self._observed is None else self._observed[idx, :t_max].clone()
        out._observed = obs if obs is not None and not bool(
            (obs | ~_value_mask(out)).all()) else None
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def index(self) -> Any:
        """The step labels of samples that continue a pandas prefix (``sample(...,
        prefix=series)``: the prefix's index continued), else None."""
        return getattr(self, "_index", None)

    def to_frame(self) -> Any:
        """Univariate sequences of equal length as a pandas DataFrame, one column per
        sequence (``sample_0``, ``sample_1``, ...), on :attr:`index` (0..T-1 without one);
        missing values are NaN.

        Raises:
            ValueError: multivariate values, or sequences of different lengths.
        """
        import pandas as pd

        if self.values.dim() != 2:
            raise ValueError("to_frame takes univariate sequences; these are [N, T_max, D]")
        if bool((self.lengths != self.max_length).any()):
            raise ValueError("to_frame takes sequences of equal length; use to_list()")
        values = self.values.to(torch.float64).clone()
        if self.has_missing:
            values[~self.observed] = float("nan")
        index = self.index if self.index is not None else pd.RangeIndex(self.max_length)
        return pd.DataFrame(values.numpy().T, index=index,
                            columns=[f"sample_{i}" for i in range(len(self))])

    def to_list(self) -> list[Any]:
        """The sequences unpadded, as a list of tensors ``[T_i]`` or ``[T_i, D]``.

        Missing values come back as they went in: NaN for reals; a sequence of symbols with
        gaps comes back as a ``numpy.ma.MaskedArray``.
        """
        return [self.with_gaps(i) if self.has_missing else self[i] for i in range(len(self))]

    def with_gaps(self, index: int) -> Any:
        """The i-th sequence with its missing values marked: a float tensor with NaN, or for
        symbols a ``numpy.ma.MaskedArray`` (``seqs[i]`` stores missing values as 0)."""
        x = self[index]
        if not self.has_missing:
            return x
        obs = self.observed[index, : x.shape[0]]
        if x.is_floating_point():
            return torch.where(obs, x, torch.full((), float("nan"), dtype=x.dtype))
        return np.ma.MaskedArray(x.numpy(), mask=~obs.numpy())

    def to(self, device: torch.device | str) -> Sequences:
        out = Sequences.__new__(Sequences)
        out.values = self.values.to(device)
        out.lengths = self.lengths.to(device)
        out._observed = None if self._observed is None else self._observed.to(device)
        return out

    def values3d(self) -> torch.Tensor:
        """Real values as ``[N, T_max, D]`` (D=1 for univariate data)."""
        return self.values if self.values.ndim == 3 else self.values.unsqueeze(-1)

    def __repr__(self) -> str:
        kind = "symbols" if self.is_discrete else "reals"
        d = f", D={self.dim}" if self.dim is not None else ""
        gaps = f", missing={self.num_steps - int(self.step_observed.sum())} steps" if (
            self.has_missing) else ""
        return (
            f"Sequences(N={len(self)}, T_max={self.max_length}, steps={self.num_steps}, "
            f"{kind}{d}{gaps})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sequences)
            and self.values.shape == other.values.shape
            and self.values.dtype == other.values.dtype
            and torch.equal(self.lengths, other.lengths)
            and torch.equal(self.values, other.values)
            and torch.equal(self.observed, other.observed)
        )

    __hash__ = None  # type: ignore[assignment]


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{what} could not be read as an array: {err}") from None


def _value_mask(seqs: Sequences) -> torch.Tensor:
    m = seqs.mask
    return m if seqs.values.dim() == 2 else m.unsqueeze(-1).expand_as(seqs.values)


def _check_lengths(lengths: Any, n: int | None, t_max: int) -> np.ndarray:
    """Validated lengths as int64: integers in ``1..t_max`` (``None``: all ``t_max``)."""
    if lengths is None:
        if n is None:
            raise ValueError("lengths are required")
        return np.full(n, t_max, dtype=np.int64)
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    lens = np.asarray(lengths)
    if lens.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got {lens.dtype} values {lens.tolist()}")
    if lens.ndim != 1 or (n is not None and lens.shape != (n,)):
        raise ValueError(f"lengths has shape {lens.shape}, expected ({n if n else 'N'},)")
    if lens.size == 0:
        raise ValueError("lengths is empty: no sequences")
    bad = np.flatnonzero((lens < 1) | (lens > t_max))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"sequence {i} has length {int(lens[i])}, outside 1..{t_max}")
    return lens.astype(np.int64)


def _is_scalar(x: Any) -> bool:
    if isinstance(x, torch.Tensor | np.ndarray):
        return x.ndim == 0
    return isinstance(x, int | float | np.number | bool)


def as_sequences(data: Any, kind: DataKind | None = None) -> tuple[Sequences, bool]:
    """Coerce any accepted input to a :class:`Sequences`.

    Accepted: a ``Sequences``; a list/tuple of sequences; one sequence given as a 1-D array
    or tensor, a list of scalars, a pandas Series, or a 2-D float array ``[T, D]``.

    Returns:
        ``(sequences, single)`` where ``single`` says one sequence was given (so outputs drop
        their N axis).
    """
    if isinstance(data, Sequences):
        if kind in ("discrete", "count") and not data.is_discrete:
            raise ValueError(
                "this Sequences holds float values but symbols are expected; symbols must have "
                "an integer dtype (use .astype(int) if they are whole numbers)"
            )
        if kind == "continuous" and data.is_discrete:
            out = Sequences.__new__(Sequences)
            out.values = data.values.to(torch.float64)
            out.lengths = data.lengths.clone()
            out._observed = data._observed
            return out, False
        return data, False
    if data is None:
        raise ValueError("no data was given (None)")
    if isinstance(data, str | bytes):
        raise ValueError("a string is not a sequence of symbols; encode it first")
    if isinstance(data, Mapping):
        raise ValueError(
            f"a {_describe(data)} is not a sequence or a list of sequences; pass "
            "list(d.values()) for a dict of sequences"
        )
    if isinstance(data, list | tuple):
        if len(data) == 0:
            raise ValueError("no sequences were given (an empty list)")
        if all(_is_scalar(x) for x in data):
            return Sequences.from_list([np.asarray([_scalar(x) for x in data])], kind), True
        if all(x is None or _is_scalar(x) for x in data):  # None: a missing value
            return Sequences.from_list([[x if x is None else _scalar(x) for x in data]],
                                       kind), True
        if any(_is_scalar(x) for x in data):
            raise ValueError(
                "the list mixes scalars and sequences; pass one sequence (a list of numbers) "
                "or a list of sequences"
            )
        return Sequences.from_list(data, kind), False
    if hasattr(data, "to_numpy") and not isinstance(data, torch.Tensor | np.ndarray):
        data = _pandas_to_numpy(data)
    if isinstance(data, torch.Tensor | np.ndarray):
        if data.ndim == 1:
            return Sequences.from_list([data], kind), True
        if data.ndim == 2:
            is_float = data.is_floating_point() if isinstance(data, torch.Tensor) else (
                np.asarray(data).dtype.kind == "f"
            )
            if not is_float:
                raise ValueError(
                    f"a 2-D integer array {tuple(data.shape)} is ambiguous: use "
                    "Sequences.from_padded(values, lengths) for a padded batch of symbol "
                    "sequences, or pass a list of 1-D sequences"
                )
            t, d = data.shape
            if t < d:
                raise ValueError(
                    f"a 2-D float array of shape {tuple(data.shape)} is read as ONE sequence of "
                    f"T={t} steps of dimension D={d}, fewer steps than dimensions. If its {t} "
                    "rows are separate sequences, pass Sequences.from_padded(x) or list(x); if "
                    "it really is one short multivariate sequence, pass it in a list: [x]"
                )
            return Sequences.from_list([data], kind), True
        if data.ndim == 0:
            raise ValueError("sequence 0 is a scalar, not a sequence")
        raise ValueError(
            f"a {data.ndim}-D array {tuple(data.shape)} is ambiguous: use "
            "Sequences.from_padded(values, lengths) for a padded batch, or pass a list"
        )
    if isinstance(data, Iterable):
        return as_sequences(list(data), kind)
    raise ValueError(f"cannot read {_describe(data)} as sequences")


def _scalar(x: Any) -> Any:
    if isinstance(x, torch.Tensor | np.ndarray):
        return x.item()
    return x


def max_symbol(seqs: Sequences) -> int:
    """The largest symbol of a discrete batch. Padding and missing steps hold 0, so this is a
    plain maximum, taken in NumPy on the CPU (one thread, as in :func:`check_sequences`)."""
    values = seqs.values
    return int(values.numpy().max() if values.device.type == "cpu" else values.max())


def check_sequences(
    seqs: Sequences,
    *,
    model: str,
    num_symbols: int | None = None,
    dim: int | None | Literal["any"] = "any",
    min_length: int = 1,
) -> None:
    """Model-specific checks on a batch; raises ``ValueError`` naming the sequence.

    Args:
        seqs: the batch.
        model: the model's name, for messages.
        num_symbols: V; symbols must lie in ``0..V-1``.
        dim: ``None`` for univariate-only models, an int D for D-dimensional models (D=1
            also accepts univariate input), ``"any"`` for no constraint.
        min_length: the shortest sequence the model can score.
    """
    if num_symbols is not None and seqs.is_discrete:
        # The scan in NumPy (one thread): a parallel torch reduction here leaves OpenMP
        # threads spinning into the compiled recursions that follow (measured to halve the
        # speed of the HMM's parallel forward pass). Padding holds 0 (a valid symbol), so
        # the mask is needed only to report the place.
        values = seqs.values
        big = ((values.numpy().max() >= num_symbols) if values.device.type == "cpu"
               else (values >= num_symbols).any())
        if bool(big) and (
                too_big := (seqs.values >= num_symbols) & seqs.mask).any():
            i, t = (int(v) for v in torch.nonzero(too_big)[0])
            raise ValueError(
                f"sequence {i} contains symbol {int(seqs.values[i, t])} at step {t}, outside "
                f"0..{num_symbols - 1} (the model has num_symbols={num_symbols})"
            )
    if dim != "any" and not seqs.is_discrete:
        got = seqs.dim
        if dim is None and got is not None:
            raise ValueError(
                f"{model} takes univariate sequences [T], but sequence 0 is 2-D [T, {got}]"
                + ("; squeeze the last axis" if got == 1 else "")
            )
        if dim is not None and not (got == dim or (dim == 1 and got is None)):
            shape = "1-D [T]" if got is None else f"[T, {got}]"
            raise ValueError(
                f"{model} expects observations of dimension D={dim}, but sequence 0 is {shape}"
            )
    if min_length > 1:
        short = torch.nonzero(seqs.lengths < min_length)
        if short.numel():
            i = int(short[0])
            raise ValueError(
                f"sequence {i} has length {int(seqs.lengths[i])}, but {model} needs at least "
                f"{min_length} steps"
            )


def as_exog(
    exog: Any, seqs: Sequences, *, data: Any = None, extra_steps: int = 0
) -> torch.Tensor:
    """Covariates aligned with a batch, validated.

    Args:
        exog: ``[N, T, E]``, or for one sequence ``[T, E]`` / ``[T]`` (E=1), a pandas
            DataFrame or Series, or a list of N per-sequence arrays ``[T_i, E]``. Each
            sequence needs covariates for its ``T_i + extra_steps`` steps.
        seqs: the batch the covariates belong to.
        data: the data as the caller passed it; when it and ``exog`` are both pandas objects,
            ``exog``'s index must start with the data's index.
        extra_steps: future steps that also need covariates (forecasts).

    Returns:
        ``[N, T_max + extra_steps, E]`` float64, zero past each sequence's needed steps.

    Raises:
        ValueError: non-numeric or non-finite covariates, the wrong number of sequences, too
            few steps, or a pandas index that does not line up with the data's.
    """
    n, t_max = len(seqs), seqs.max_length
    need = seqs.lengths + extra_steps
    if isinstance(exog, list | tuple) and exog and not _is_scalar(exog[0]):
        rows = [_exog_array(e, f"exog of sequence {i}") for i, e in enumerate(exog)]
        if len(rows) != n:
            raise ValueError(f"exog has covariates for {len(rows)} sequences, the data has {n}")
    else:
        if _is_pandas(exog) and _is_pandas(data):
            _check_index(exog.index, data.index)
        arr = _exog_array(exog, "exog")
        if arr.ndim == 3:
            if arr.shape[0] != n:
                raise ValueError(
                    f"exog has covariates for {arr.shape[0]} sequences, the data has {n}"
                )
            rows = list(arr)
        elif n == 1:
            rows = [arr]
        else:
            raise ValueError(
                f"exog of shape {arr.shape} is for one sequence but the data has {n}; "
                "pass [N, T, E] or a list of N arrays [T_i, E]"
            )
    dims = {r.shape[1] for r in rows}
    if len(dims) != 1:
        raise ValueError(f"exog has different numbers of covariates per sequence: {sorted(dims)}")
    e = dims.pop()
    out = np.zeros((n, t_max + extra_steps, e), dtype=np.float64)
    for i, r in enumerate(rows):
        k = int(need[i])
        if r.shape[0] < k:
            future = f" ({extra_steps} future steps included)" if extra_steps else ""
            raise ValueError(
                f"exog for sequence {i} has {r.shape[0]} steps, but the sequence needs {k}"
                f"{future}"
            )
        out[i, :k] = r[:k]
    return torch.from_numpy(out)


def _exog_array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy") and callable(x.to_numpy):
        x = x.to_numpy(dtype=float, na_value=np.nan) if hasattr(x, "dtypes") or hasattr(
            x, "dtype") else x.to_numpy()
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers (floats)") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim not in (2, 3) or arr.shape[-1] == 0:
        raise ValueError(f"{what} has shape {arr.shape}; expected [T, E] or [N, T, E]")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{what} has a non-finite value (NaN or inf) at {where}")
    return arr


def _is_pandas(x: Any) -> bool:
    return hasattr(x, "index") and hasattr(x, "iloc")


def _check_index(exog_index: Any, data_index: Any) -> None:
    k = len(data_index)
    if len(exog_index) < k or not exog_index[:k].equals(data_index):
        raise ValueError(
            "exog's index does not line up with the data's index: its first "
            f"{k} labels must equal the data's ({data_index[0]} .. {data_index[-1]})"
        )
