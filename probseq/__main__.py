"""``python -m probseq``."""

import sys

from probseq.cli import main

if __name__ == "__main__":
    sys.exit(main())
