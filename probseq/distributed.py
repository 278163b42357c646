"""Data parallelism with ``torch.distributed``, detected rather than configured.

When a process group is initialised (a script started by ``torchrun`` that called
``torch.distributed.init_process_group``), every rank passes the same whole dataset and
probseq splits it: each rank works on the sequences ``rank, rank + W, rank + 2W, ...``
(W = world size), as ``DistributedSampler(shuffle=False)`` does without padding. Fits then
combine the ranks' work (summed sufficient statistics for EM, averaged gradients for
neural networks), and ``log_prob`` gathers the shards back in the caller's order, so every
rank ends with the same model and the same numbers.

Inside :func:`local`, probseq ignores the process group (for rank-0-only work).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.distributed as dist

from probseq.data import Sequences

__all__ = [
    "is_active",
    "rank",
    "world_size",
    "local",
    "shard_indices",
    "shard",
    "all_reduce_sum",
    "gather_in_order",
    "broadcast_tensors",
    "common_seed",
    "RankSampler",
]

_state = threading.local()


def is_active() -> bool:
    """True when a process group of more than one rank is initialised (and not inside
    :func:`local`)."""
    return (
        not getattr(_state, "local", False)
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Run the block as if no process group existed (no sharding, no collectives)."""
    previous = getattr(_state, "local", False)
    _state.local = True
    try:
        yield
    finally:
        _state.local = previous


def shard_indices(n: int) -> torch.Tensor:
    """This rank's sequence indices: ``rank, rank + W, ...`` (all of them when inactive;
    empty when ``n <= rank``)."""
    r = rank()
    return torch.arange(r, max(n, r), world_size())


def shard(seqs: Sequences) -> Sequences:
    """This rank's part of a batch (possibly empty when N < W)."""
    if not is_active():
        return seqs
    return seqs[shard_indices(len(seqs))]


def _device() -> torch.device:
    backend = dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else (
        torch.device("cpu")
    )


def all_reduce_sum(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum each tensor over ranks (in float64 where it is floating point); every rank gets
    the totals. Identity when inactive."""
    if not is_active():
        return tensors
    out = {}
    for name, t in tensors.items():
        buf = t.detach().to(_device()).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out[name] = buf.to(t.device)
    return out


def gather_in_order(local_values: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble per-sequence results computed on each rank's :func:`shard`.

    Args:
        local_values: ``[n_local, ...]`` results for this rank's indices.
        n: the total number of sequences N.

    Returns:
        ``[N, ...]`` in the original order, identical on every rank.
    """
    if not is_active():
        return local_values
    w = world_size()
    dev = _device()
    # Pad every shard to the same size along dim 0 and the same trailing shape (T_max can
    # differ between shards), then scatter back by index.
    trailing = torch.tensor(list(local_values.shape[1:]) or [0], device=dev)
    sizes = [torch.zeros_like(trailing) for _ in range(w)]
    dist.all_gather(sizes, trailing)
    full_trailing = torch.stack(sizes).max(0).values.tolist() if local_values.ndim > 1 else []
    per_rank = -(-n // w)
    buf = torch.zeros((per_rank, *full_trailing), dtype=local_values.dtype, device=dev)
    slices = tuple(slice(0, s) for s in local_values.shape)
    buf[slices] = local_values.to(dev)
    gathered = [torch.empty_like(buf) for _ in range(w)]
    dist.all_gather(gathered, buf)
    out = torch.zeros((n, *full_trailing), dtype=local_values.dtype)
    for r, g in enumerate(gathered):
        idx = torch.arange(r, max(n, r), w)
        out[idx] = g[: len(idx)].cpu()
    return out


def broadcast_tensors(tensors: dict[str, torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor in place with rank ``src``'s value."""
    if not is_active():
        return
    dev = _device()
    for t in tensors.values():
        buf = t.detach().to(dev).clone()
        dist.broadcast(buf, src=src)
        with torch.no_grad():
            t.copy_(buf.to(t.device))


def common_seed() -> int:
    """A random seed drawn on rank 0 and shared with every rank (so that random choices in
    a fit, such as initialisations and validation splits, agree across ranks)."""
    seed = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)
    if is_active():
        buf = seed.to(_device())
        dist.broadcast(buf, src=0)
        seed = buf.cpu()
    return int(seed)


class RankSampler:
    """This rank's part of another sampler's order, as ``DistributedSampler`` does it.

    Each epoch the wrapped sampler's order (the same on every rank, since it is seeded by
    ``(seed, epoch)``) is padded by repeating its beginning to a multiple of W, and rank r
    takes positions ``r, r + W, ...``. Every rank therefore sees the same number of
    sequences, so collective operations stay in step; the few repeated sequences weigh a
    little more in that epoch.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.num = -(-len(sampler) // world_size())

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        order = list(self.sampler)
        total = self.num * world_size()
        order += order[: total - len(order)]
        return iter(order[rank():total:world_size()])

    def __len__(self) -> int:
        return self.num
