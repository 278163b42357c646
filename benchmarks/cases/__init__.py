"""The benchmark cases; importing this package registers them in ``CASES``, in this order."""

import importlib

MODULES = ("hmm", "hsmm", "lgssm", "autoregressive", "arima", "markov", "recurrent",
           "sampling", "scaling", "bayes", "main_job")

for _name in MODULES:
    importlib.import_module(f"benchmarks.cases.{_name}")
