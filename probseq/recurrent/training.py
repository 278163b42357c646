"""The training loop of :class:`~probseq.recurrent.RecurrentModel`: Adam, gradient clipping,
early stopping on validation likelihood, a guard against divergence.

The loop sees only a network, a loss function and padded tensors, never a model object.
Each epoch draws its batch order from an index sampler with the interface of
``torch.utils.data.DistributedSampler`` (``set_epoch``, ``__iter__``, ``__len__``), so a
distributed sampler can replace :class:`ShuffleSampler` without touching the loop.

Shapes: N sequences, T steps (``T_max`` the longest), D observation dimensions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from probseq import distributed
from probseq._utils import progress_bar

__all__ = ["PaddedData", "ShuffleSampler", "TrainingResult", "train_network", "evaluate_nll"]

#: ``loss_fn(network, values, lengths) -> summed negative log-likelihood`` (a 0-d tensor).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PaddedData:
    """Training data already on the device.

    Attributes:
        values: ``[N, T_max]`` symbols or ``[N, T_max, D]`` standardised reals, on the device.
        lengths: ``[N]`` int64 on the device.
        lengths_cpu: the same lengths on the CPU (batch shapes are read without a device sync).
    """

    values: torch.Tensor
    lengths: torch.Tensor
    lengths_cpu: torch.Tensor

    @classmethod
    def build(cls, values: torch.Tensor, lengths: torch.Tensor, device: torch.device):
        return cls(values.to(device), lengths.to(device), lengths.cpu())

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def num_steps(self) -> int:
        return int(self.lengths_cpu.sum())

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The sequences at ``index`` (CPU int64), trimmed to their own longest length.

        Returns:
            ``(values, lengths, num_steps)`` with values ``[B, T_b, ...]`` on the device.
        """
        lengths_cpu = self.lengths_cpu[index]
        t_max = int(lengths_cpu.max())
        dev_index = index.to(self.values.device, non_blocking=True)
        return (self.values[dev_index, :t_max], self.lengths[dev_index],
                int(lengths_cpu.sum()))


class ShuffleSampler:
    """Indices ``0..n-1`` in a fresh random order each epoch, reproducible from a seed.

    The order of epoch e depends only on ``(seed, e)``, as in ``DistributedSampler``.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _batches(indices: Iterable[int], batch_size: int) -> Iterator[torch.Tensor]:
    idx = torch.as_tensor(list(indices), dtype=torch.int64)
    yield from torch.split(idx, batch_size)


@dataclass
class TrainingResult:
    """What happened during training.

    Attributes:
        history: ``{"train": [...], "valid": [...]}``, nats per step per epoch (train is the
            running average during the epoch, in training mode; valid is NaN without
            validation data).
        best_epoch: the epoch whose weights were kept (1-based).
        stopped: ``"max_epochs"``, ``"early_stopping"`` or ``"diverged"``.
    """

    history: dict[str, list[float]] = field(default_factory=lambda: {"train": [], "valid": []})
    best_epoch: int = 0
    stopped: str = "max_epochs"


@torch.no_grad()
def evaluate_nll(network: nn.Module, loss_fn: LossFn, data: PaddedData,
                 batch_size: int) -> float:
    """Mean negative log-likelihood per step (nats) of ``data``, in evaluation mode.

    Under an active process group each rank scores its shard and the sums are combined.
    """
    was_training = network.training
    network.eval()
    total = torch.zeros((), dtype=torch.float64, device=data.values.device)
    for index in _batches(distributed.shard_indices(len(data)).tolist(), batch_size):
        values, lengths, _ = data.batch(index)
        total += loss_fn(network, values, lengths).double()
    network.train(was_training)
    total = distributed.all_reduce_sum({"nll": total})["nll"]
    return float(total) / data.num_steps


def _snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def train_network(
    network: nn.Module,
    loss_fn: LossFn,
    train: PaddedData,
    valid: PaddedData | None,
    *,
    sampler: ShuffleSampler,
    max_epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int | None,
    clip_norm: float | None,
    progress: bool | None = None,
    desc: str = "fit",
    sync_every: int = 10,
) -> TrainingResult:
    """Fit ``network`` by Adam on the mean negative log-likelihood per step.

    Each epoch visits the training sequences once in the sampler's order, in batches of
    ``batch_size`` sequences; the loss of a batch is its summed NLL divided by its number of
    real steps. Gradients are clipped to ``clip_norm`` (L2 over all parameters). After each
    epoch the validation NLL per step is measured in evaluation mode; the best weights are kept
    and restored at the end, and training stops after ``patience`` epochs without improvement.
    Without validation data the final weights are kept.

    Under an active ``torch.distributed`` process group the loop is data-parallel: the network
    is wrapped in ``DistributedDataParallel`` (which starts every rank from rank 0's weights
    and averages gradients), each rank takes its part of the sampler's order
    (:class:`probseq.distributed.RankSampler`), the running and validation losses are summed
    over ranks so that every rank takes the same early-stopping and divergence decisions, and
    rank 0's kept weights are broadcast at the end.

    A non-finite loss or gradient norm stops training: the last good weights (the best so far,
    or those at the end of the last finished epoch) are restored with a ``RuntimeWarning``;
    if no epoch had finished, ``FloatingPointError`` is raised.

    Args:
        network: the module, on the device, in float32 (any dtype works).
        loss_fn: summed NLL of a batch ``(network, values, lengths) -> 0-d tensor``.
        train: training data on the device.
        valid: validation data, or None.
        sampler: the per-epoch order of the training sequences.
        max_epochs: the most passes over the data.
        batch_size: sequences per gradient step.
        learning_rate: Adam's step size.
        patience: epochs without validation improvement before stopping (None: never stop).
        clip_norm: the largest gradient norm (None: no clipping).
        progress: show a tqdm bar (None: when stderr is a terminal).
        desc: the bar's label.
        sync_every: how many batches between reads of the running loss (each read waits for
            the device).

    Returns:
        A :class:`TrainingResult`; ``network`` holds the kept weights.
    """
    forward = network
    if distributed.is_active():
        from torch.nn.parallel import DistributedDataParallel

        sampler = distributed.RankSampler(sampler)
        forward = DistributedDataParallel(network)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    params = [p for p in network.parameters() if p.requires_grad]
    result = TrainingResult()
    best_state: dict[str, torch.Tensor] | None = None
    best_valid = math.inf
    bad_epochs = 0
    batches_per_epoch = math.ceil(len(sampler) / batch_size)
    device = train.values.device
    bar = progress_bar(max_epochs * batches_per_epoch, progress, desc)
    try:
        for epoch in range(1, max_epochs + 1):
            network.train()
            sampler.set_epoch(epoch)
            running = torch.zeros((), dtype=torch.float64, device=device)
            grad_ok = torch.ones((), dtype=torch.bool, device=device)
            steps = 0
            for b, index in enumerate(_batches(sampler, batch_size), start=1):
                values, lengths, n_steps = train.batch(index)
                nll = loss_fn(forward, values, lengths)
                optimizer.zero_grad(set_to_none=True)
                (nll / n_steps).backward()
                norm = nn.utils.clip_grad_norm_(
                    params, clip_norm if clip_norm is not None else math.inf
                )
                grad_ok &= torch.isfinite(norm)
                optimizer.step()
                running += nll.detach().double()
                steps += n_steps
                if b % sync_every == 0 or b == batches_per_epoch:
                    totals = distributed.all_reduce_sum({
                        "running": running,
                        "steps": torch.tensor(float(steps), dtype=torch.float64, device=device),
                        "bad": (~grad_ok).double(),
                    })
                    grad_ok = totals["bad"] == 0
                    train_nats = float(totals["running"]) / float(totals["steps"])
                    if not (math.isfinite(train_nats) and bool(grad_ok)):
                        return _diverged(network, result, best_state, epoch)
                    bar.set_postfix(epoch=epoch, train=f"{train_nats:.4f}",
                                    valid=_fmt(result.history["valid"]))
                bar.update(1)
            valid_nats = (
                evaluate_nll(network, loss_fn, valid, 4 * batch_size)
                if valid is not None else math.nan
            )
            result.history["train"].append(train_nats)
            result.history["valid"].append(valid_nats)
            if valid is None:
                best_state, result.best_epoch = _snapshot(network), epoch
                continue
            if not math.isfinite(valid_nats):
                return _diverged(network, result, best_state, epoch)
            if valid_nats < best_valid:
                best_valid, best_state, result.best_epoch = valid_nats, _snapshot(network), epoch
                bad_epochs = 0
            else:
                bad_epochs += 1
                if patience is not None and bad_epochs >= patience:
                    result.stopped = "early_stopping"
                    break
    finally:
        bar.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    distributed.broadcast_tensors(network.state_dict())
    network.eval()
    return result


def _fmt(history: list[float]) -> str:
    return f"{history[-1]:.4f}" if history else "-"


def _diverged(network: nn.Module, result: TrainingResult,
              best_state: dict[str, torch.Tensor] | None, epoch: int) -> TrainingResult:
    if best_state is None:
        raise FloatingPointError(
            f"training diverged (non-finite loss or gradient) in epoch {epoch}, before any "
            "epoch finished; try a smaller learning_rate or a smaller clip_norm"
        )
    warnings.warn(
        f"training diverged (non-finite loss or gradient) in epoch {epoch}; stopped and "
        f"restored the weights of epoch {result.best_epoch}",
        RuntimeWarning,
        stacklevel=3,
    )
    network.load_state_dict(best_state)
    network.eval()
    result.stopped = "diverged"
    return result
