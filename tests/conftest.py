"""Test-session settings.

One torch thread: the suite is dominated by small tensor operations, for which a second
thread costs more than it gains, and two-thread torch collapses when another process holds
a core (measured on the 2-core machine). Benchmarks set their own thread count.
"""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
