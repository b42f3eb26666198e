"""``python -m benchmarks.keyed_state``: the driver, or with ``--worker`` one measurement."""

import sys

from benchmarks.keyed_state.cli import main

if __name__ == "__main__":
    sys.exit(main())
