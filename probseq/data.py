"""Ragged batches of sequences and the checks every input passes on its way in.

Shapes use the letters of :mod:`probseq.base`: N sequences, T steps (``T_max`` the longest),
D observation dimensions, V symbols.

A :class:`Sequences` holds ``values`` padded to ``[N, T_max]`` (symbols, int64, or univariate
reals, float64) or ``[N, T_max, D]`` (multivariate reals, float64) and ``lengths [N]``; the
mask is derived from the lengths. Padding is always stored as zeros, so padding never changes
a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

DataKind = Literal["discrete", "count", "continuous"]

__all__ = ["Sequences", "as_sequences", "check_sequences", "DataKind"]


def _describe(x: Any) -> str:
    return type(x).__name__


def _to_numpy(x: Any, index: int) -> np.ndarray:
    """One sequence as a numpy array (a copy is made later, never a view of the caller's)."""
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
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy") and callable(x.to_numpy):  # pandas Series / DataFrame
        x = x.to_numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"sequence {index} could not be read as an array: {err}") from None
    if arr.dtype == object:
        # A list holding numbers of mixed Python types is still fine; anything else is not.
        try:
            arr = np.asarray(arr.tolist(), dtype=float)
        except (ValueError, TypeError):
            raise ValueError(
                f"sequence {index} holds non-numeric values ({_describe(x)} of objects); "
                "sequences must be numbers"
            ) from None
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
    return arr


def _check_one(arr: np.ndarray, index: int, symbols: bool) -> None:
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
        bad = ~np.isfinite(arr)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            what = "NaN" if np.isnan(arr).any() else "inf"
            raise ValueError(
                f"sequence {index} contains {what} (first non-finite value at step {step})"
            )
    elif symbols:
        if arr.ndim != 1:
            raise ValueError(
                f"sequence {index} is a 2-D integer array {tuple(arr.shape)}; symbol sequences "
                "are 1-D (for multivariate real data pass floats)"
            )
        if arr.size and arr.min() < 0:
            step = int(np.argmax(arr < 0))
            raise ValueError(
                f"sequence {index} contains a negative symbol {int(arr[step])} at step {step}; "
                "symbols are 0..V-1"
            )


class Sequences:
    """A ragged batch of N sequences, stored padded.

    Attributes:
        values: ``[N, T_max]`` int64 symbols or float64 reals, or ``[N, T_max, D]`` float64.
            Padding is zero.
        lengths: ``[N]`` int64, the single source of truth for where each sequence ends.

    Build one with :meth:`from_list` or :meth:`from_padded`; both validate their input and
    copy it, so nothing the caller passed is modified or aliased.
    """

    __slots__ = ("values", "lengths")

    def __init__(self, values: torch.Tensor, lengths: torch.Tensor):
        # Internal constructor: trusted tensors, already validated and zero-padded.
        self.values = values
        self.lengths = lengths

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_list(cls, sequences: Iterable[Any], kind: DataKind | None = None) -> Sequences:
        """Pad a list of sequences (arrays, tensors, lists or pandas Series).

        Args:
            sequences: N sequences, each ``[T_i]`` or ``[T_i, D]``.
            kind: ``"discrete"``/``"count"`` requires integer symbols, ``"continuous"``
                promotes integers to float64; ``None`` infers (all integer means discrete).

        Raises:
            ValueError: naming the offending sequence.
        """
        if isinstance(sequences, str | bytes):
            raise ValueError("a string is not a list of sequences; encode it as symbols first")
        arrays = [_to_numpy(s, i) for i, s in enumerate(sequences)]
        if not arrays:
            raise ValueError("no sequences were given (an empty list)")
        is_float = [a.dtype.kind == "f" for a in arrays]
        if kind is None:
            kind = "continuous" if any(is_float) else "discrete"
        for i, a in enumerate(arrays):
            _check_one(a, i, symbols=kind != "continuous")
        if kind in ("discrete", "count"):
            for i, f in enumerate(is_float):
                if f:
                    raise ValueError(
                        f"sequence {i} has float values but symbols are expected; symbols must "
                        "have an integer dtype (use .astype(int) if they are whole numbers)"
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
        if kind == "continuous":
            shape = (len(arrays), t_max) + arrays[0].shape[1:]
            values = np.zeros(shape, dtype=np.float64)
        else:
            values = np.zeros((len(arrays), t_max), dtype=np.int64)
        for i, a in enumerate(arrays):
            values[i, : a.shape[0]] = a
        return cls(torch.from_numpy(values), torch.from_numpy(lengths))

    @classmethod
    def from_padded(
        cls, values: Any, lengths: Any | None = None, kind: DataKind | None = None
    ) -> Sequences:
        """Wrap an already padded array.

        Args:
            values: ``[N, T_max]`` or ``[N, T_max, D]``. Values past each length are ignored
                (they may be anything, NaN included).
            lengths: ``[N]`` integers in ``1..T_max``; ``None`` means every row is full.
            kind: as in :meth:`from_list`.
        """
        arr = _to_numpy(values, 0)
        if arr.ndim not in (2, 3):
            raise ValueError(
                f"from_padded needs values of shape [N, T_max] or [N, T_max, D], got {arr.shape}"
            )
        n, t_max = arr.shape[:2]
        if lengths is None:
            lens = np.full(n, t_max, dtype=np.int64)
        else:
            if isinstance(lengths, torch.Tensor):
                lengths = lengths.detach().cpu().numpy()
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise ValueError(f"lengths must be integers, got dtype {lens.dtype}")
            if lens.shape != (n,):
                raise ValueError(f"lengths has shape {lens.shape}, expected ({n},)")
            lens = lens.astype(np.int64)
        bad = np.flatnonzero((lens < 1) | (lens > t_max))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"sequence {i} has length {int(lens[i])}, outside 1..{t_max}")
        return cls.from_list([arr[i, : lens[i]] for i in range(n)], kind=kind)

    @classmethod
    def from_concatenated(cls, x: Any, lengths: Sequence[int], kind: DataKind | None = None):
        """hmmlearn's format: all sequences concatenated along time, plus their lengths."""
        arr = _to_numpy(x, 0)
        lens = np.asarray(lengths, dtype=np.int64)
        if lens.sum() != arr.shape[0]:
            raise ValueError(f"lengths sum to {int(lens.sum())} but x has {arr.shape[0]} steps")
        return cls.from_list(np.split(arr, np.cumsum(lens)[:-1]), kind=kind)

    # -- views --------------------------------------------------------------------------------
    @property
    def mask(self) -> torch.Tensor:
        """``[N, T_max]`` bool, True at real (unpadded) steps."""
        t = torch.arange(self.values.shape[1], device=self.lengths.device)
        return t[None, :] < self.lengths[:, None]

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
        return Sequences(self.values[idx, :t_max].clone(), lengths.clone())

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to_list(self) -> list[torch.Tensor]:
        """The sequences unpadded, as a list of tensors ``[T_i]`` or ``[T_i, D]``."""
        return [self[i] for i in range(len(self))]

    def to(self, device: torch.device | str) -> Sequences:
        return Sequences(self.values.to(device), self.lengths.to(device))

    def values3d(self) -> torch.Tensor:
        """Real values as ``[N, T_max, D]`` (D=1 for univariate data)."""
        return self.values if self.values.ndim == 3 else self.values.unsqueeze(-1)

    def __repr__(self) -> str:
        kind = "symbols" if self.is_discrete else "reals"
        d = f", D={self.dim}" if self.dim is not None else ""
        return (
            f"Sequences(N={len(self)}, T_max={self.max_length}, steps={self.num_steps}, "
            f"{kind}{d})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sequences)
            and self.values.shape == other.values.shape
            and self.values.dtype == other.values.dtype
            and torch.equal(self.lengths, other.lengths)
            and torch.equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]


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
            return Sequences(data.values.to(torch.float64), data.lengths.clone()), False
        return data, False
    if data is None:
        raise ValueError("no data was given (None)")
    if isinstance(data, str | bytes):
        raise ValueError("a string is not a sequence of symbols; encode it first")
    if isinstance(data, list | tuple):
        if len(data) == 0:
            raise ValueError("no sequences were given (an empty list)")
        if all(_is_scalar(x) for x in data):
            return Sequences.from_list([np.asarray([_scalar(x) for x in data])], kind), True
        if any(_is_scalar(x) for x in data):
            raise ValueError(
                "the list mixes scalars and sequences; pass one sequence (a list of numbers) "
                "or a list of sequences"
            )
        return Sequences.from_list(data, kind), False
    if hasattr(data, "to_numpy") and not isinstance(data, torch.Tensor | np.ndarray):
        data = data.to_numpy()
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
        too_big = (seqs.values >= num_symbols) & seqs.mask
        if too_big.any():
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
