"""Where records end in CSV and JSONL bytes, found without parsing the records.

A JSONL record ends at every newline. A CSV record ends at a newline that is not inside a quoted
field. The fast path counts quote characters with numpy: a newline ends a record when the number
of quotes before it is even. That holds when quotes open fields only at a field's start, with
quotes inside a quoted field doubled (RFC 4180). A quote elsewhere (``5'10"`` in an unquoted
field) is a literal character for pyarrow and for Python's ``csv`` module, and would flip the
parity; the scanner notices such a quote (an "opening" quote not preceded by a delimiter, a line
break or the closing half of a doubled quote) and the callers then fall back to an exact scan with
the ``csv`` module.

Empty lines (``\\n`` or ``\\r\\n`` alone) are not records, as in pyarrow's reader.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

NEWLINE = 10
CARRIAGE_RETURN = 13
_EMPTY = np.empty(0, dtype=np.int64)


class AmbiguousQuotes(Exception):
    """A quote character appears inside an unquoted field; parity counting would be wrong."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"literal quote character at byte {offset}")
        self.offset = offset


@dataclass
class ScanState:
    """What the scanner carries from one block to the next."""

    offset: int
    record_start: int
    quotes_odd: bool = False
    prev_byte: int = NEWLINE
    newlines: int = 0


class RecordScanner:
    """Feeds blocks of a text object in order; reports where non-empty records end.

    ``feed`` returns the absolute end offsets (exclusive, just past the newline) of the records
    that end in the block. Raises AmbiguousQuotes when the fast path cannot be trusted.
    """

    def __init__(self, start: int, quote: str | None, delimiter: str | None) -> None:
        self.quote = ord(quote) if quote else None
        self.delimiter = ord(delimiter) if delimiter else None
        self.state = ScanState(offset=start, record_start=start)
        self.block_newlines: np.ndarray = _EMPTY

    def feed(self, block: bytes) -> np.ndarray:
        st = self.state
        arr = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(arr == NEWLINE)
        if self.quote is None:
            ends = newlines
        else:
            quotes = np.flatnonzero(arr == self.quote)
            parity0 = int(st.quotes_odd)
            if quotes.size:
                self._check_openers(arr, quotes, parity0)
                inside = (parity0 + np.searchsorted(quotes, newlines)) & 1
                ends = newlines[inside == 0]
                st.quotes_odd = bool((parity0 + quotes.size) & 1)
            else:
                ends = newlines if not parity0 else _EMPTY
        ends_abs = ends.astype(np.int64) + st.offset + 1
        ends_abs = self._drop_empty(arr, ends_abs)
        self.block_newlines = newlines.astype(np.int64) + st.offset
        st.newlines += int(newlines.size)
        st.prev_byte = int(arr[-1]) if arr.size else st.prev_byte
        st.offset += len(block)
        return ends_abs

    def newlines_before(self, positions: np.ndarray, newlines_before_block: int) -> np.ndarray:
        """Line breaks before each absolute position in the block fed last."""
        return newlines_before_block + np.searchsorted(self.block_newlines, positions)

    def finish(self) -> np.ndarray:
        """The end of a last record that has no trailing newline, if there is one."""
        st = self.state
        if st.offset > st.record_start and not (
            st.offset - st.record_start == 1 and st.prev_byte == CARRIAGE_RETURN
        ):
            st.record_start = st.offset
            return np.array([st.offset], dtype=np.int64)
        return _EMPTY

    @property
    def inside_quotes(self) -> bool:
        return self.state.quotes_odd

    def _check_openers(self, arr: np.ndarray, quotes: np.ndarray, parity0: int) -> None:
        # A quote seen with an even number of quotes before it opens a quoted field; it must
        # start a field (follow a delimiter or a line break) for parity counting to be exact.
        # Right after a closing quote it is the second half of a doubled (escaped) quote.
        openers = quotes[((np.arange(quotes.size) + parity0) & 1) == 0]
        if not openers.size:
            return
        prev = arr[np.maximum(openers - 1, 0)].astype(np.int64)
        if openers[0] == 0:
            prev[0] = self.state.prev_byte
        ok = (prev == NEWLINE) | (prev == CARRIAGE_RETURN) | (prev == self.quote)
        if self.delimiter is not None:
            ok |= prev == self.delimiter
        if not ok.all():
            raise AmbiguousQuotes(self.state.offset + int(openers[np.argmin(ok)]))

    def _drop_empty(self, arr: np.ndarray, ends_abs: np.ndarray) -> np.ndarray:
        st = self.state
        if not ends_abs.size:
            return ends_abs
        starts = np.empty_like(ends_abs)
        starts[0] = st.record_start
        starts[1:] = ends_abs[:-1]
        length = ends_abs - starts  # includes the newline
        cr_before = np.zeros(ends_abs.size, dtype=bool)
        two = np.flatnonzero(length == 2)
        if two.size:
            local = ends_abs[two] - 2 - st.offset  # index of the byte before the newline
            in_block = local >= 0
            vals = np.full(two.size, -1, dtype=np.int64)
            vals[in_block] = arr[local[in_block]]
            vals[~in_block] = st.prev_byte
            cr_before[two] = vals == CARRIAGE_RETURN
        empty = (length == 1) | cr_before
        st.record_start = int(ends_abs[-1])
        return ends_abs[~empty]


class UnclosedQuote(Exception):
    """The last record opens a quoted field that is never closed (a truncated file or a stray
    quote). ``line_breaks`` is the number of line breaks before the record's first line,
    counted from where the scan started; ``offset`` is where the record starts."""

    def __init__(self, offset: int, line_breaks: int) -> None:
        super().__init__(f"a quoted field in the record at byte {offset} is never closed")
        self.offset = offset
        self.line_breaks = line_breaks


# Fed to the csv module after the last line: it comes back as a row of its own unless the last
# record is still inside a quoted field, which swallows it.
_END_SENTINEL = "\x00batch_pipeline:end-of-data\x00"


def exact_csv_record_ends(
    lines: Iterable[bytes],
    start: int,
    delimiter: str,
    quote: str | None,
    check_closed: bool = False,
) -> Iterator[tuple[int, int]]:
    """Record ends found by Python's ``csv`` module, with the count of line breaks before each
    end. Slower than the numpy scan (a C parser, but Python per line) and exact when quotes appear
    inside unquoted fields. Empty lines are skipped, as pyarrow does.

    With ``check_closed``, a last record whose quoted field never closes raises UnclosedQuote
    (the csv module would silently take the rest of the data as the field's value)."""
    position = start
    line_breaks = 0

    def tracked() -> Iterator[str]:
        nonlocal position, line_breaks
        for line in lines:
            position += len(line)
            if line.endswith(b"\n"):
                line_breaks += 1
            yield line.decode("latin-1")  # one char per byte: offsets stay byte offsets
        if check_closed:
            yield _END_SENTINEL  # the csv module ends a record at the end of each string

    reader = csv.reader(
        tracked(),
        delimiter=delimiter,
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
        doublequote=True,
        strict=False,
    )
    record_start, breaks_at_start = start, 0
    for row in reader:
        if check_closed and row and _END_SENTINEL in row[-1]:
            if row == [_END_SENTINEL]:
                return
            raise UnclosedQuote(record_start, breaks_at_start)
        if row:
            yield position, line_breaks
        record_start, breaks_at_start = position, line_breaks


def record_ends(data: bytes, start: int, quote: str | None, delimiter: str | None) -> np.ndarray:
    """All record ends in ``data`` (which begins at a record boundary at offset ``start``),
    including a last record without a trailing newline."""
    scanner = RecordScanner(start, quote, delimiter)
    try:
        return np.concatenate([scanner.feed(data), scanner.finish()])
    except AmbiguousQuotes:
        found = exact_csv_record_ends(io.BytesIO(data), start, delimiter or ",", quote)
        return np.fromiter((end for end, _ in found), dtype=np.int64)


def record_line_offsets(
    data: bytes, quote: str | None, delimiter: str | None, records: np.ndarray
) -> np.ndarray:
    """For the given record indices of ``data`` (a chunk starting at a record boundary), the
    number of line breaks before each record's first line. Add the chunk's first line number
    to get the 1-based line of the record in the source."""
    ends = record_ends(data, 0, quote, delimiter)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)[records]
    arr = np.frombuffer(data, dtype=np.uint8)
    # A record's span begins right after the previous record, so it may start with empty lines
    # that are not records: move each start past them (only those few are walked in Python).
    for i in np.flatnonzero(arr[np.minimum(starts, max(len(arr) - 1, 0))] <= CARRIAGE_RETURN):
        pos = int(starts[i])
        while pos < len(arr) and arr[pos] in (NEWLINE, CARRIAGE_RETURN):
            pos += 1
        starts[i] = pos
    newline_positions = np.flatnonzero(arr == NEWLINE)
    return np.searchsorted(newline_positions, starts).astype(np.int64)
