"""``python -m benchmarks.throughput``: the driver, or with ``--worker`` one measurement."""

import sys

from benchmarks.throughput.cli import main

if __name__ == "__main__":
    sys.exit(main())
