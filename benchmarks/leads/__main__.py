"""``python -m benchmarks.leads``: the driver, or with ``--worker`` one batch."""

import sys

from benchmarks.leads.cli import main

if __name__ == "__main__":
    sys.exit(main())
