"""The training loop of :class:`~probseq.recurrent.RecurrentModel`: Adam over training windows
(truncated back-propagation through time), gradient clipping, early stopping counted in
optimiser steps, a learning-rate schedule and a guard against divergence.

The loop sees only a network, a step function and padded tensors, never a model object.

Training data is a set of *streams* (whole sequences, or contiguous pieces of long ones).
Each epoch draws the order of the streams from an index sampler with the interface of
``torch.utils.data.DistributedSampler`` (``set_epoch``, ``__iter__``, ``__len__``), groups
them in batches and walks every batch window by window: each window of ``window_length``
steps is one optimiser step, and the network's state is carried (detached) from one window to
the next, so one long series gives many optimiser steps per epoch and the network still sees
the whole past in its state.

Shapes: N sequences (or streams), T steps (``T_max`` the longest), D observation dimensions,
W the window length, B the batch size.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from probseq import distributed
from probseq._utils import progress_bar

_log = logging.getLogger("probseq")

__all__ = ["PaddedData", "ShuffleSampler", "TrainingResult", "train_network", "evaluate_nll",
           "LR_SCHEDULES"]

#: ``step_fn(network, x, mask, state, previous, has_previous, exog) -> (summed NLL, state)``:
#: ``x [B, W(, D)]`` one window, ``mask [B, W]`` the steps that count, ``state`` the network
#: state after the step before the window (None at the start), ``previous [B(, D)]`` the
#: observation before the window's first step (None: every row starts at its beginning) and
#: ``has_previous [B]`` which rows have one (the others read the start input); ``exog``
#: ``[B, W, E]`` the window's covariates or None.
StepFn = Callable[..., tuple[torch.Tensor, Any]]

#: the learning-rate schedules of :func:`train_network`.
LR_SCHEDULES = ("constant", "cosine", "plateau")


@dataclass
class PaddedData:
    """Training or validation data already on the device.

    Attributes:
        values: ``[N, T_max]`` symbols or ``[N, T_max, D]`` standardised reals, on the device.
        lengths: ``[N]`` int64 on the device.
        lengths_cpu: the same lengths on the CPU (batch shapes are read without a device sync).
        score_from: ``[N]`` int64 on the CPU: steps before it are context that is read but
            not scored (zeros: every step counts).
        previous: ``[N]`` or ``[N, D]`` on the device, the observation just before each row's
            first step where the row continues a longer sequence, or None.
        has_previous: ``[N]`` bool on the device (rows without one read the start input), or
            None.
        exog: ``[N, T_max, E]`` standardised covariates on the device, or None.
    """

    values: torch.Tensor
    lengths: torch.Tensor
    lengths_cpu: torch.Tensor
    score_from: torch.Tensor
    previous: torch.Tensor | None = None
    has_previous: torch.Tensor | None = None
    exog: torch.Tensor | None = None

    @classmethod
    def build(cls, values: torch.Tensor, lengths: torch.Tensor, device: torch.device, *,
              score_from: torch.Tensor | None = None, previous: torch.Tensor | None = None,
              has_previous: torch.Tensor | None = None,
              exog: torch.Tensor | None = None) -> PaddedData:
        lengths_cpu = lengths.cpu().to(torch.int64)
        score_from = (torch.zeros_like(lengths_cpu) if score_from is None
                      else score_from.cpu().to(torch.int64))
        if previous is not None and not bool(has_previous.any()):
            previous = has_previous = None
        return cls(values.to(device), lengths.to(device), lengths_cpu, score_from,
                   None if previous is None else previous.to(device),
                   None if has_previous is None else has_previous.to(device),
                   None if exog is None else exog.to(device))

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def num_steps(self) -> int:
        """The number of scored steps."""
        return int((self.lengths_cpu - self.score_from).clamp(min=0).sum())

    def rows(self, index: torch.Tensor) -> PaddedData:
        """The rows at ``index`` (CPU int64), trimmed to their own longest length."""
        lengths_cpu = self.lengths_cpu[index]
        t_max = int(lengths_cpu.max()) if len(index) else 0
        dev_index = index.to(self.values.device, non_blocking=True)
        return PaddedData(
            self.values[dev_index, :t_max], self.lengths[dev_index], lengths_cpu,
            self.score_from[index],
            None if self.previous is None else self.previous[dev_index],
            None if self.has_previous is None else self.has_previous[dev_index],
            None if self.exog is None else self.exog[dev_index, :t_max],
        )

    def window_steps(self, t0: int, t1: int) -> int:
        """The number of scored steps in ``[t0, t1)`` over all rows."""
        lo = torch.clamp(self.score_from, min=t0)
        hi = torch.clamp(self.lengths_cpu, max=t1)
        return int((hi - lo).clamp(min=0).sum())

    def mask(self, t0: int, t1: int) -> torch.Tensor:
        """``[N, t1 - t0]`` bool on the device: the scored steps of the window."""
        t = torch.arange(t0, t1, device=self.values.device)
        score_from = self.score_from.to(self.values.device)
        return (t < self.lengths[:, None]) & (t >= score_from[:, None])


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


@dataclass
class TrainingResult:
    """What happened during training.

    Attributes:
        history: ``{"train": [...], "valid": [...], "steps": [...]}`` per epoch: nats per
            step (train is the running average during the epoch, in training mode; valid is
            NaN without validation data) and the optimiser steps taken so far.
        best_epoch: the epoch whose weights were kept (1-based).
        best_step: the optimiser step at the end of that epoch.
        num_steps: the optimiser steps taken.
        stopped: ``"early_stopping"``, ``"max_steps"``, ``"max_epochs"`` or ``"diverged"``.
        converged: True when the monitored loss (validation, else training) had stopped
            improving for ``patience`` optimiser steps when training ended.
    """

    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train": [], "valid": [], "steps": []})
    best_epoch: int = 0
    best_step: int = 0
    num_steps: int = 0
    stopped: str = "max_epochs"
    converged: bool = False


def _windows(t_max: int, window: int | None) -> list[tuple[int, int]]:
    w = t_max if window is None else window
    return [(t0, min(t0 + w, t_max)) for t0 in range(0, max(t_max, 1), w)]


def _previous_for(data: PaddedData, t0: int, x: torch.Tensor):
    """``(previous, has_previous)`` for the window starting at ``t0`` of ``data``'s rows."""
    if t0 == 0:
        return data.previous, data.has_previous
    prev = x[:, t0 - 1]
    return prev, torch.ones(prev.shape[0], dtype=torch.bool, device=prev.device)


def _exog_window(data: PaddedData, t0: int, t1: int) -> torch.Tensor | None:
    return None if data.exog is None else data.exog[:, t0:t1]


def _detach(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


@torch.no_grad()
def evaluate_nll(network: nn.Module, step_fn: StepFn, data: PaddedData, batch_size: int,
                 window: int | None = 4096) -> float:
    """Mean negative log-likelihood per scored step (nats) of ``data``, in evaluation mode.

    Rows are read in batches and long rows window by window with the state carried, so the
    result is the exact conditional NLL of the scored steps given everything before them.
    Under an active process group each rank scores its shard (possibly empty) and the sums
    are combined.
    """
    was_training = network.training
    network.eval()
    total = torch.zeros((), dtype=torch.float64, device=data.values.device)
    for index in torch.split(distributed.shard_indices(len(data)), batch_size):
        if len(index) == 0:  # an empty shard contributes nothing
            continue
        part = data.rows(index)
        state = None
        for t0, t1 in _windows(part.values.shape[1], window):
            prev, has_prev = _previous_for(part, t0, part.values)
            nll, state = step_fn(network, part.values[:, t0:t1], part.mask(t0, t1), state,
                                 prev, has_prev, _exog_window(part, t0, t1))
            total += nll.double()
    network.train(was_training)
    total = distributed.all_reduce_sum({"nll": total})["nll"]
    return float(total) / max(data.num_steps, 1)


def _snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _sync_gradients(params: list[nn.Parameter]) -> None:
    """Sum the gradients over ranks (a rank without data contributes zeros)."""
    if not distributed.is_active():
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    flat = distributed.all_reduce_sum({"g": flat})["g"]
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def train_network(
    network: nn.Module,
    step_fn: StepFn,
    train: PaddedData,
    valid: PaddedData | None,
    *,
    sampler: ShuffleSampler,
    max_epochs: int | None,
    batch_size: int,
    learning_rate: float,
    patience: int | None,
    clip_norm: float | None,
    window_length: int | None = None,
    max_steps: int | None = None,
    min_steps: int = 0,
    lr_schedule: str = "constant",
    weight_decay: float = 0.0,
    progress: bool | None = None,
    desc: str = "fit",
) -> TrainingResult:
    """Fit ``network`` by Adam on the mean negative log-likelihood per step, window by window.

    Each epoch visits the training streams once in the sampler's order, in batches of
    ``batch_size`` streams. A batch is walked in windows of ``window_length`` steps (None:
    the whole batch at once); each window is one optimiser step on the window's summed NLL
    divided by its number of real steps, and the network state at the end of a window starts
    the next one (detached: truncated back-propagation through time). Gradients are clipped
    to ``clip_norm`` (L2 over all parameters).

    After each epoch the monitored loss is measured: the validation NLL per step in
    evaluation mode, or without validation data the epoch's running training NLL. Early
    stopping counts optimiser steps: training ends once the monitored loss has not improved
    for ``patience`` steps, but never before ``min_steps`` steps; it also ends after
    ``max_steps`` steps or ``max_epochs`` epochs (None: no limit). With validation data the
    best weights are restored at the end; without, the last weights are kept. The result is
    *converged* when the monitored loss had stopped improving for ``patience`` steps by the
    end (a run cut short by ``max_steps`` or ``max_epochs`` while still improving is not).

    Learning-rate schedules: ``"constant"``; ``"cosine"`` (from ``learning_rate`` down to
    zero at ``max_steps``, which must be given); ``"plateau"`` (halved after every epoch that
    does not improve the monitored loss, down to ``learning_rate / 64``).

    Under an active ``torch.distributed`` process group the loop is data-parallel: every rank
    starts from rank 0's weights, the sampler's order (the same on every rank) is cut into
    global batches of ``batch_size * W`` streams of which rank r takes positions
    ``r, r + W, ...``, and each window's gradient is the sum over ranks of the ranks' summed
    NLL gradients divided by the global number of steps in the window, so a rank whose part
    is empty (fewer streams than ranks) contributes nothing and every rank takes the same
    step. Losses are summed over ranks, so every rank takes the same decisions.

    A non-finite loss or gradient norm stops training: the last good weights (the best so far,
    or those at the end of the last finished epoch) are restored with a ``RuntimeWarning``;
    if no epoch had finished, ``FloatingPointError`` is raised.

    Args:
        network: the module, on the device, in float32 (any dtype works).
        step_fn: the summed NLL of one window (see ``StepFn``).
        train: training streams on the device.
        valid: validation data, or None.
        sampler: the per-epoch order of the training streams.
        max_epochs: the most passes over the data (None: no limit).
        batch_size: streams per batch (per rank).
        learning_rate: Adam's step size.
        patience: optimiser steps without improvement before stopping (None: never stop
            early).
        clip_norm: the largest gradient norm (None: no clipping).
        window_length: W, steps per optimiser step (None: whole batches).
        max_steps: the most optimiser steps (None: no limit).
        min_steps: early stopping never ends training before this many optimiser steps.
        lr_schedule: one of ``LR_SCHEDULES``.
        weight_decay: Adam's L2 penalty (``torch.optim.AdamW``'s decoupled form when > 0).
        progress: show a tqdm bar (None: on a terminal or in a notebook).
        desc: the bar's label.

    Returns:
        A :class:`TrainingResult`; ``network`` holds the kept weights.
    """
    if max_epochs is None and max_steps is None:
        raise ValueError("give max_epochs or max_steps (or both)")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if lr_schedule == "cosine" and max_steps is None:
        raise ValueError("lr_schedule='cosine' needs max_steps")
    world, rank = distributed.world_size(), distributed.rank()
    distributed.broadcast_tensors(network.state_dict())
    params = [p for p in network.parameters() if p.requires_grad]
    if weight_decay > 0:
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=learning_rate)
    result = TrainingResult()
    best_state: dict[str, torch.Tensor] | None = None
    best_loss = math.inf
    device = train.values.device
    global_batch = batch_size * world
    steps_per_epoch = sum(
        len(_windows(int(train.lengths_cpu.max()), window_length)) for _ in
        range(0, len(sampler), global_batch)
    )
    total_bar = (min(max_steps, steps_per_epoch * max_epochs) if max_epochs and max_steps
                 else max_steps or steps_per_epoch * max_epochs)
    bar = progress_bar(total_bar, progress, desc)
    report = _ProgressLog(desc, total_bar)
    step = 0
    kept_epoch = 0
    lr = learning_rate

    def set_lr(value: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = value

    try:
        epoch = 0
        while max_epochs is None or epoch < max_epochs:
            epoch += 1
            network.train()
            sampler.set_epoch(epoch)
            order = torch.as_tensor(list(sampler), dtype=torch.int64)
            running = torch.zeros((), dtype=torch.float64, device=device)
            counted = 0
            out_of_steps = False
            for g0 in range(0, len(order), global_batch):
                global_index = order[g0: g0 + global_batch]
                whole = train.rows(global_index)  # every rank knows the global batch
                part = train.rows(global_index[rank::world])
                x = part.values
                state = None
                for t0, t1 in _windows(whole.values.shape[1], window_length):
                    n_window = whole.window_steps(t0, t1)
                    optimizer.zero_grad(set_to_none=True)
                    if len(part) and t0 < x.shape[1]:
                        prev, has_prev = _previous_for(part, t0, x)
                        nll, state = step_fn(network, x[:, t0:t1], part.mask(t0, t1), state,
                                             prev, has_prev, _exog_window(part, t0, t1))
                        state = _detach(state)
                        (nll / n_window).backward()
                        running += nll.detach().double()
                    _sync_gradients(params)
                    for p in params:  # a rank without data (or a parameter unused) adds 0
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                    norm = nn.utils.clip_grad_norm_(
                        params, clip_norm if clip_norm is not None else math.inf
                    )
                    if not bool(torch.isfinite(norm)):
                        return _diverged(network, result, best_state, kept_epoch, epoch, step)
                    if lr_schedule == "cosine":
                        set_lr(0.5 * learning_rate * (1 + math.cos(math.pi * step / max_steps)))
                    optimizer.step()
                    step += 1
                    counted += n_window
                    bar.update(1)
                    report.step(step, epoch, running, counted)
                    if max_steps is not None and step >= max_steps:
                        out_of_steps = True
                        break
                if out_of_steps:
                    break
            totals = distributed.all_reduce_sum({"running": running})
            train_nats = float(totals["running"]) / max(counted, 1)
            if not math.isfinite(train_nats):
                return _diverged(network, result, best_state, kept_epoch, epoch, step)
            valid_nats = (
                evaluate_nll(network, step_fn, valid, 4 * batch_size)
                if valid is not None else math.nan
            )
            result.history["train"].append(train_nats)
            result.history["valid"].append(valid_nats)
            result.history["steps"].append(step)
            result.num_steps = step
            monitored = valid_nats if valid is not None else train_nats
            if not math.isfinite(monitored):
                return _diverged(network, result, best_state, kept_epoch, epoch, step)
            if valid is None:  # keep the last weights (and restore them on divergence)
                best_state, kept_epoch = _snapshot(network), epoch
            if monitored < best_loss:
                best_loss, result.best_epoch, result.best_step = monitored, epoch, step
                if valid is not None:
                    best_state, kept_epoch = _snapshot(network), epoch
            elif lr_schedule == "plateau":
                lr = max(lr / 2, learning_rate / 64)
                set_lr(lr)
            report.epoch(step, epoch, train_nats, valid_nats)
            bar.set_postfix(epoch=epoch, train=f"{train_nats:.4f}",
                            valid=f"{valid_nats:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            stalled = patience is not None and step - result.best_step >= patience
            if stalled and step >= min_steps:
                result.stopped, result.converged = "early_stopping", True
                break
            if out_of_steps:
                result.stopped, result.converged = "max_steps", stalled
                break
        else:
            result.converged = patience is not None and step - result.best_step >= patience
    finally:
        bar.close()
    if valid is None:  # the last weights; "best" only tracked convergence
        result.best_epoch, result.best_step = epoch, step
    if best_state is not None:
        network.load_state_dict(best_state)
    distributed.broadcast_tensors(network.state_dict())
    network.eval()
    return result


class _ProgressLog:
    """Progress through :mod:`logging` (logger ``probseq``, level INFO): after each epoch
    and at most every ``interval`` seconds within one, the steps done, the losses, the time
    spent and an estimate of the time left. Seen wherever logging is configured (the
    command line configures it; in a notebook, ``logging.basicConfig(level="INFO")``)."""

    def __init__(self, desc: str, total: int | None, interval: float = 30.0):
        self.desc, self.total, self.interval = desc, total, interval
        self.start = self.last = time.perf_counter()

    def _left(self, step: int) -> str:
        if not self.total or step <= 0:
            return ""
        spent = time.perf_counter() - self.start
        return f", about {spent * (self.total - step) / step:.0f} s left at most"

    def step(self, step: int, epoch: int, running: torch.Tensor, counted: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.interval and _log.isEnabledFor(logging.INFO):
            self.last = now
            _log.info("%s: step %d/%s (epoch %d), training loss %.4f nats/step, %.0f s%s",
                      self.desc, step, self.total or "?", epoch,
                      float(running) / max(counted, 1), now - self.start, self._left(step))

    def epoch(self, step: int, epoch: int, train: float, valid: float) -> None:
        now = time.perf_counter()
        self.last = now
        _log.info("%s: epoch %d done at step %d/%s, training loss %.4f, validation loss %.4f "
                  "nats/step, %.0f s%s", self.desc, epoch, step, self.total or "?", train,
                  valid, now - self.start, self._left(step))


def _diverged(network: nn.Module, result: TrainingResult,
              best_state: dict[str, torch.Tensor] | None, kept_epoch: int, epoch: int,
              step: int) -> TrainingResult:
    if best_state is None:
        raise FloatingPointError(
            f"training diverged (non-finite loss or gradient) in epoch {epoch}, before any "
            "epoch finished; try a smaller learning_rate or a smaller clip_norm"
        )
    warnings.warn(
        f"training diverged (non-finite loss or gradient) in epoch {epoch} (optimiser step "
        f"{step + 1}); stopped and restored the weights of epoch {kept_epoch}",
        RuntimeWarning,
        stacklevel=3,
    )
    network.load_state_dict(best_state)
    network.eval()
    result.stopped = "diverged"
    result.best_epoch = kept_epoch
    result.num_steps = step
    return result
