"""A big CSV chunk run in slices: read, processed and written a slice at a time, two at once.

``run_chunk`` hands a chunk here when it can be cut further (``sliceable``): a scanned CSV byte
range (its record count is known, so the slices' total can be checked) of a processor whose
outcome for a record depends on that record alone (``Processor.row_independent``). The chunk's
bytes are read in pieces of about ``SLICE_BYTES``, each cut at its last record end (a line
break outside quotes: ``RecordScanner`` once the chunk has shown a quote, else the last line
break), and each slice goes through the same reader, processor and rejected-record code as a
whole chunk, as a chunk of its own whose first line is known. Two slices are in work at once in
threads (Arrow's readers and kernels release the GIL, so both cores are busy) while this thread
reads the next piece and appends the finished slices, in order, to the chunk's valid Parquet
object (``Storage.parquet_writer``: visible only once the whole chunk is written).

So a chunk's memory is a few slices, whatever its size, and its work overlaps on two cores. The
results are those of the whole chunk: the same valid records in order, and rejected records
with their record index in the chunk (the slice's own plus the records of the slices before
it), their line and their reason. Before anything becomes visible the records read must be the
records the plan counted; else ``ConservationError`` and no output.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.columns import conform
from batch_pipeline.core.common.errors import ChunkReadError, ConservationError
from batch_pipeline.core.common.models import BatchSpec, Chunk
from batch_pipeline.core.inputs.boundaries import AmbiguousQuotes, RecordScanner, count_line_breaks
from batch_pipeline.core.inputs.readers import read_csv_bytes
from batch_pipeline.core.processing.processors import Processor
from batch_pipeline.core.stores.storage import Storage

#: Bytes of a chunk read and processed at a time (about 76,000 records of 110 bytes). Measured
#: over 4M records of the benchmark file through validate: 8 MiB slices ran 5-10% faster than
#: 16 MiB (the pipeline of two slices fills and drains faster) in 20% less memory; 4 MiB no
#: faster.
SLICE_BYTES = 8 << 20
#: Worker threads: each reads and processes a slice, then appends it in its turn.
SLICES_IN_FLIGHT = 2


def sliceable(spec: BatchSpec, chunk: Chunk, processor: Processor) -> bool:
    """Whether ``chunk`` is run in slices: a scanned CSV byte range of more than two slices,
    and a processor that judges each record on its own."""
    return (
        chunk.kind == "bytes"
        and spec.source.format == "csv"
        and chunk.expected_records is not None
        and chunk.end - chunk.start > 2 * SLICE_BYTES
        and processor.row_independent
    )


@dataclass
class Slice:
    """``data``: whole records of the chunk, from byte ``start`` of the object."""

    number: int
    start: int
    data: bytes


@dataclass
class SliceResult:
    records_in: int
    lines: int  # line breaks in the slice
    bytes_read: int
    valid: pa.Table
    rejected: pa.Table
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class SlicedChunk:
    """What the slices of a chunk added up to; the valid records are written already."""

    records_in: int = 0
    lines: int = 0
    bytes_read: int = 0
    records_out: int = 0
    rejected: list[pa.Table] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _last_break(data: bytes) -> int:
    """Just past the last line break of ``data`` that is surely whole (a ``\\r`` that is the
    last byte may be the first half of ``\\r\\n``); 0 when there is none."""
    if len(data) < 2:
        return 0
    k = max(data.rfind(b"\n", 0, len(data) - 1), data.rfind(b"\r", 0, len(data) - 1))
    if k < 0:
        return 0
    if data[k] == 0x0D and data[k + 1] == 0x0A:
        k += 1
    return k + 1


def cut_slices(storage: Storage, spec: BatchSpec, chunk: Chunk, size: int) -> Iterator[Slice]:
    """The chunk's bytes as slices of whole records, in order, read ``size`` bytes at a time.

    Each read starts where the next slice starts (the end of a record, so no bytes are joined
    and the few bytes after the last cut are read again) and looks at ``size`` new bytes. A
    cut goes after the last line break while no quote has been seen in the chunk (no line break
    can be inside quotes then); from the first read with a quote on, a ``RecordScanner``
    (started at that read's start, a record boundary, and fed each byte once) finds where
    records end. When the scanner cannot trust its quote counting, the rest of the chunk is
    one slice. Lines are not counted here (see ``run_slice``): this thread only reads and
    cuts."""
    assert spec.source.csv is not None
    quote, delimiter = spec.source.csv.quote_char, spec.source.csv.delimiter
    quote_byte = quote.encode() if quote else None
    scanner: RecordScanner | None = None
    whole_rest = False
    start, looked, number = chunk.start, chunk.start, 0  # next slice's start; bytes seen
    while start < chunk.end:
        until = chunk.end if whole_rest else min(looked + size, chunk.end)
        data = storage.read_range(chunk.uri, start, until)
        if len(data) != until - start:
            raise ChunkReadError(
                f"{chunk.describe()}: read {len(data)} bytes at {start}, expected "
                f"{until - start}; the object changed after planning"
            )
        seen, looked = looked - start, until  # data[seen:]: bytes not looked at before
        if until >= chunk.end:
            cut = len(data)  # the chunk ends at a record boundary (planned so)
        elif scanner is None and (quote_byte is None or data.find(quote_byte, seen) < 0):
            cut = _last_break(data)
        else:
            fed = memoryview(data)[seen:]
            if scanner is None:
                scanner, fed = RecordScanner(start, quote, delimiter), memoryview(data)
            try:
                ends = scanner.feed(fed)
            except AmbiguousQuotes:
                whole_rest = True
                continue
            cut = int(ends[-1]) - start if ends.size and int(ends[-1]) > start else 0
        if cut <= 0:
            continue  # no record ends in it yet: read on
        yield Slice(number, start, data if cut >= len(data) else data[:cut])
        start += cut
        number += 1


def run_slice(
    spec: BatchSpec, chunk: Chunk, piece: Slice, processor: Processor, schema: pa.Schema
) -> SliceResult:
    """One slice through the reader, the processor and the rejected-record code, as a chunk
    of its own: records and lines numbered within the slice (its first line is 1; in its turn
    the slice's records and lines are shifted by those of the slices before it), and its line
    breaks counted here, on a worker thread."""
    from batch_pipeline.core.processing.run import check_result, processor_errors, rejected_table

    part = dataclasses.replace(
        chunk, start=piece.start, end=piece.start + len(piece.data), first_line=1, records=None
    )
    # one thread each: the slices in flight are the parallelism (Arrow's threaded parser on
    # top of them was 8-12% slower over 4M records, and held more memory)
    data = read_csv_bytes(piece.data, spec.source, part, use_threads=False)
    data.table = conform(data.table, schema)
    with processor_errors(processor, chunk.describe()):
        result = processor.process(data.table)
    check_result(processor, part, data.table.num_rows, result)
    rejected = rejected_table(data, result.rejected, result.reasons, part)
    lines = count_line_breaks(piece.data)
    return SliceResult(
        data.records_in, lines, len(piece.data), result.valid, rejected, result.counts
    )


class Turns:
    """Slices take their turn, in order, to add their results to the chunk's: slice ``n``
    waits for slice ``n - 1`` to have added its own. A slice that fails does so in its turn,
    which ends every later turn (``Aborted``), as ``fail`` does: so the results are those of
    the slices before the first failure, and the first error raised (futures are awaited in
    order) is that failure's."""

    class Aborted(Exception):
        """An earlier slice failed: this one's results are not added."""

    def __init__(self) -> None:
        self._turn = 0
        self._failed = False
        self._changed = threading.Condition()

    @contextmanager
    def turn(self, number: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._turn == number or self._failed)
            if self._failed:
                raise Turns.Aborted
        try:
            yield
        except BaseException:
            self.fail()
            raise
        with self._changed:
            self._turn = number + 1
            self._changed.notify_all()

    def fail(self) -> None:
        with self._changed:
            self._failed = True
            self._changed.notify_all()


def run_slices(
    storage: Storage,
    spec: BatchSpec,
    chunk: Chunk,
    processor: Processor,
    schema: pa.Schema,
    valid_uri: str,
    size: int | None = None,
) -> SlicedChunk:
    """Every slice of ``chunk``, ``SLICES_IN_FLIGHT`` at a time, the valid records appended to
    ``valid_uri`` in order; the rejected ones returned (their ``_record`` the index in the
    chunk). Raises ConservationError, writing nothing, when the slices read other than the
    plan's count of records. ``size``: bytes per slice (default ``SLICE_BYTES``).

    This thread cuts the slices; each worker thread reads and processes its slice, then, in
    its turn (``Turns``), appends the valid records and adds its counts, so that cutting,
    processing and writing overlap."""
    total = SlicedChunk()
    turns = Turns()
    empty_valid: list[pa.Table] = []
    pending: deque[Future[None]] = deque()

    with storage.parquet_writer(valid_uri) as writer:

        def work(piece: Slice) -> None:
            try:
                result = run_slice(spec, chunk, piece, processor, schema)
            except BaseException:
                # in its turn: the slices before end first, the ones after are aborted
                with turns.turn(piece.number):
                    raise
            with turns.turn(piece.number):
                if result.valid.num_rows:
                    writer.write(result.valid)
                elif not empty_valid:
                    empty_valid.append(result.valid)
                rejected = result.rejected
                if rejected.num_rows:
                    assert chunk.first_line is not None
                    before = {"_record": total.records_in, "_line": chunk.first_line - 1}
                    before["_line"] += total.lines
                    for name, offset in before.items():
                        index = rejected.schema.get_field_index(name)
                        shifted = pc.add(rejected.column(index), offset)
                        rejected = rejected.set_column(index, name, shifted)
                    total.rejected.append(rejected)
                total.records_in += result.records_in
                total.lines += result.lines
                total.bytes_read += result.bytes_read
                total.records_out += result.valid.num_rows
                for name, count in result.counts.items():
                    total.counts[name] = total.counts.get(name, 0) + count

        with ThreadPoolExecutor(SLICES_IN_FLIGHT, thread_name_prefix="slice") as pool:
            try:
                for piece in cut_slices(storage, spec, chunk, size or SLICE_BYTES):
                    pending.append(pool.submit(work, piece))
                    while len(pending) > SLICES_IN_FLIGHT:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            except BaseException:
                turns.fail()
                for future in pending:
                    future.cancel()
                raise
        if writer.rows is None and empty_valid:
            writer.write(empty_valid[0])  # no valid record at all: an empty file of the columns
        missing = (chunk.end - chunk.start) - total.bytes_read
        if missing:
            raise ConservationError(
                f"{chunk.describe()}: the slices read {abs(missing):,} bytes "
                f"{'fewer' if missing > 0 else 'more'} than the chunk holds: they were cut "
                "wrong; nothing of this chunk was written"
            )
        expected = chunk.expected_records
        if total.records_in != expected:
            raise ConservationError(
                f"{chunk.describe()}: read {total.records_in:,} records (parsed and rejected) "
                f"in slices, the plan expected {expected:,}: the reader and the planner "
                "disagree about where records end; nothing of this chunk was written"
            )
    return total
