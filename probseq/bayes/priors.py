"""Overriding the priors of a family's ``pyro_model``, and writing them to JSON.

A prior override is a dict ``site name -> Pyro distribution``. It replaces the distribution
of that sample site (the family's default prior) wherever the model samples it. A
distribution whose shape is the site's shape is used as given; one with fewer event
dimensions is expanded to the site's shape with ``to_event`` (``Dirichlet(alpha)`` for each
row of a transition matrix, a scalar ``LogNormal`` for every variance of a vector).

Only distributions that can be written to JSON (a class of ``pyro.distributions`` built
from tensor arguments named in its ``arg_constraints``, optionally ``Independent``) are
accepted, so that a saved model rebuilds without unpickling.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.poutine.messenger import Messenger

__all__ = ["PriorOverride", "prior_to_json", "prior_from_json", "check_prior"]


class PriorOverride(Messenger):
    """A Pyro handler that replaces the prior of named latent sample sites."""

    def __init__(self, priors: dict[str, Any]):
        super().__init__()
        self.priors = priors
        self.used: set[str] = set()

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or msg["name"] not in self.priors:
            return
        old = msg["fn"]
        new = self.priors[msg["name"]]
        shape = old.batch_shape + old.event_shape
        if new.batch_shape + new.event_shape != shape:
            extra = len(old.event_shape) - len(new.event_shape)
            try:
                new = new.expand(shape[: len(shape) - len(new.event_shape)])
                if extra > 0:
                    new = new.to_event(extra)
            except (RuntimeError, ValueError) as err:
                raise ValueError(
                    f"prior for {msg['name']!r} has shape {tuple(new.batch_shape)} + "
                    f"{tuple(new.event_shape)}; the site has {tuple(old.batch_shape)} + "
                    f"{tuple(old.event_shape)}") from err
        elif len(new.event_shape) < len(old.event_shape):
            new = new.to_event(len(old.event_shape) - len(new.event_shape))
        msg["fn"] = new
        self.used.add(msg["name"])


def prior_to_json(priors: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON-able description of a prior override (see :func:`prior_from_json`)."""
    if priors is None:
        return None
    return {name: _dist_to_json(d, name) for name, d in priors.items()}


def _dist_to_json(d: Any, name: str) -> dict[str, Any]:
    import pyro.distributions as dist

    if isinstance(d, torch.distributions.Independent):
        return {"independent": int(d.reinterpreted_batch_ndims),
                "base": _dist_to_json(d.base_dist, name)}
    cls = type(d).__name__
    if getattr(dist, cls, None) is not type(d):
        raise ValueError(f"prior for {name!r} is a {cls}; priors must be distributions of "
                         "pyro.distributions (optionally .to_event(...))")
    # the arguments it was built from: those stored on it (one of probs/logits), else every
    # argument (properties of transformed distributions such as LogNormal, InverseGamma)
    keys = [k for k in d.arg_constraints if k in d.__dict__] or list(d.arg_constraints)
    args = {k: torch.as_tensor(getattr(d, k), dtype=torch.float64).tolist() for k in keys}
    out = {"class": cls, "args": args}
    if isinstance(getattr(d, "dim", None), int):  # LKJ, LKJCholesky: a size, not a tensor
        out["dim"] = int(d.dim)
    return out


def prior_from_json(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The prior override a JSON description stands for."""
    if spec is None:
        return None
    return {name: _dist_from_json(s) for name, s in spec.items()}


def _dist_from_json(s: dict[str, Any]) -> Any:
    import pyro.distributions as dist

    if "independent" in s:
        return _dist_from_json(s["base"]).to_event(int(s["independent"]))
    cls = getattr(dist, s["class"])
    args = {k: torch.tensor(v, dtype=torch.float64) for k, v in s["args"].items()}
    if "dim" in s:
        args["dim"] = int(s["dim"])
    return cls(**args)


def check_prior(priors: Any) -> dict[str, Any] | None:
    """Validate a prior override: a dict of site name -> Pyro distribution (JSON-able)."""
    if priors is None:
        return None
    if not isinstance(priors, dict) or not all(isinstance(k, str) for k in priors):
        raise ValueError("prior must be a dict of site name -> pyro distribution")
    for name, d in priors.items():
        if not isinstance(d, torch.distributions.Distribution):
            raise ValueError(f"prior[{name!r}] is a {type(d).__name__}, not a distribution")
        try:
            rebuilt = _dist_from_json(_dist_to_json(d, name))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"prior[{name!r}] cannot be written to a model file: "
                             f"{err}") from None
        if type(rebuilt) is not type(d):
            raise ValueError(f"prior[{name!r}] cannot be written to a model file")
    return dict(priors)
