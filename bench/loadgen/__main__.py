"""``python -m bench.loadgen`` from the repository root, or ``python bench/loadgen``."""

from __future__ import annotations

import sys
from pathlib import Path


if not __package__:
    # Run as a directory (python bench/loadgen): make ``bench.loadgen`` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.loadgen.cli import main  # noqa: E402


if __name__ == "__main__":
    sys.exit(main())
