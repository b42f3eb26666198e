"""Read one chunk's slice straight from storage into an Arrow table.

CSV and JSONL chunks are one range read (a seek locally, a range GET on S3) parsed by pyarrow;
Parquet chunks read their row groups (or staged parts); Excel chunks stream their sheet rows.

CSV values are read as text, as Step Functions' CSV reader does: nothing is lost to type
guessing ("007" stays "007") and every chunk of a file has the same schema. Typing is the job of
a processor (``validate`` declares column types).

Records that cannot be parsed (a CSV row with the wrong number of fields, invalid UTF-8, a
malformed JSON line) are not fatal: they come back as parse rejects with a reason and their raw
text, and the rest of the chunk is kept.

Modules: ``chunk_data`` (``ChunkData``, what every reader returns), ``dispatch``
(``read_chunk``, by the chunk's kind and format), ``csv_reader``, ``jsonl_reader`` and
``parquet_reader`` (row groups and staged parts). Excel sheets are read by ``inputs.excel``.
"""

from batch_pipeline.core.inputs.readers.chunk_data import ChunkData, offset_lines, rejects_table
from batch_pipeline.core.inputs.readers.csv_reader import (
    check_not_cut_in_quotes,
    one_record_per_line,
    read_csv_bytes,
    split_invalid_utf8,
)
from batch_pipeline.core.inputs.readers.dispatch import check_unchanged, read_chunk
from batch_pipeline.core.inputs.readers.jsonl_reader import read_jsonl
from batch_pipeline.core.inputs.readers.parquet_reader import combine_parts, part_records

__all__ = [
    "ChunkData",
    "check_not_cut_in_quotes",
    "check_unchanged",
    "combine_parts",
    "offset_lines",
    "one_record_per_line",
    "part_records",
    "read_chunk",
    "read_csv_bytes",
    "read_jsonl",
    "rejects_table",
    "split_invalid_utf8",
]
