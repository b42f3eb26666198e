"""``python -m benchmarks.small_files``: the driver, or with ``--worker`` one measurement."""

import sys

from benchmarks.small_files.cli import main

if __name__ == "__main__":
    sys.exit(main())
