"""Test-session settings.

``slow`` tests (pyproject.toml) run in ``make test``; ``.ci/run`` runs the suite on the oldest
and newest supported Pythons without them, except those also marked ``crossversion``: the
checks whose numbers must agree on every Python (the shipped networks' bits per character).

One torch thread: the suite is dominated by small tensor operations, for which a second
thread costs more than it gains, and two-thread torch collapses when another process holds
a core (measured on the 2-core machine). Benchmarks set their own thread count.
"""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)


def pytest_configure(config):
    # Registered here, not in pyproject.toml, whose hash keys the CI's kept venvs.
    config.addinivalue_line(
        "markers", "crossversion: a slow check that also runs on the other Pythons in CI "
        "(.ci/run selects -m 'not slow or crossversion' there)")
