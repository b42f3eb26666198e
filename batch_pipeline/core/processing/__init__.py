"""Process: each chunk of a batch through its processor, one ``process_chunk`` step per chunk.

- ``run``: ``run_chunk`` runs one chunk in a step (read its slice, process it, write valid and
  rejected records, summarise).
- ``attempts``: ``attempt_chunk``, one attempt at a chunk recorded in the ledger, around
  ``run_chunk``, with the retry-or-dead-letter decision.
- ``dead_letters``: the dead-letter document of a chunk that kept failing.
- ``processors/``: the record processors (``passthrough``, ``validate``): a table in, valid
  records and rejects out.

Not to be confused with ``batch_pipeline.executor``, the Dagster executor, which only decides in
which process each step runs.
"""
