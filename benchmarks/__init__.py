"""Side-by-side benchmarks of probseq against peer libraries.

Run ``python -m benchmarks`` (or ``make bench``); ``--quick`` for a smoke run, ``--only``
to pick cases, ``--list`` to see them. Every comparison runs probseq and its peers in the
same process with interleaved repeats and drops repeats during which another process used
the CPU (see :mod:`benchmarks.timing`). The table of ratios goes to ``results.md`` and
``results.json``, the scaling curves to ``scaling.png``.
"""
