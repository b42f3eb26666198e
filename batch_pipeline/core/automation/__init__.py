"""What the upload sensor and the nightly schedule decide, without Dagster: ``discovery`` (what
is new under a watched location), ``grouping`` (small files into file-set runs) and ``alerts``."""
