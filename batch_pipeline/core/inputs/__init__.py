"""Inputs: what a source is, and how a chunk's records are read from it, without Dagster.

- ``sources``: ``inspect_source`` (format and compression, CSV options and header, the JSON
  shape, the Parquet footer, Excel sheets) and ``derive_batch_id``.
- ``boundaries``: where CSV and JSONL records end, without parsing them.
- ``readers/``: ``read_chunk``, one chunk's slice into an Arrow table, with its parse rejects.
- ``excel``: Excel workbooks, read-only and streaming.
- ``staging``: sources that cannot be cut by bytes (a JSON document, gzip) streamed once into
  Parquet parts.
- ``filesets``: a folder or prefix of many small files as one batch.
- ``sample_data``: realistic demo input (leads) for the CLI's ``sample``, the tests and the
  benchmarks.

Nothing is re-exported here: ``stores.storage`` imports ``boundaries``, and importing every
module with the package would make that an import cycle.
"""
