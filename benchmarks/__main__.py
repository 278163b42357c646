"""``python -m benchmarks``: run the benchmarks."""

from benchmarks.cli import main

raise SystemExit(main())
