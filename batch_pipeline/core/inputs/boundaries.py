"""Where records end in CSV and JSONL bytes, found without parsing the records.

A line break is ``\\n``, ``\\r\\n`` or a lone ``\\r`` (one not followed by ``\\n``: classic Mac
files, some Excel exports), as for pyarrow's readers, also mixed in one file. A JSONL record ends
at every line break (a JSON string cannot hold a raw one). A CSV record ends at a line break that
is not inside a quoted field; inside one, every byte (``\\r`` too) is part of the value. The fast
path counts quote characters with numpy: a line break ends a record when the number of quotes
before it is even. That holds when quotes open fields only at a field's start, with
quotes inside a quoted field doubled (RFC 4180). A quote elsewhere (``5'10"`` in an unquoted
field) is a literal character for pyarrow and for Python's ``csv`` module, and would flip the
parity; the scanner notices such a quote (an "opening" quote not preceded by a delimiter, a line
break or the closing half of a doubled quote) and the callers then fall back to an exact scan with
the ``csv`` module.

Empty lines (a line break alone, of any style) are not records, as in pyarrow's reader. In JSON
Lines (scanned without a delimiter) a line of only whitespace is not a record either, as for
pyarrow's JSON reader.
Line numbers count every line break, quoted ones included (``count_line_breaks``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

NEWLINE = 10
CARRIAGE_RETURN = 13
_EMPTY = np.empty(0, dtype=np.int64)
LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def line_break_positions(arr: np.ndarray) -> np.ndarray:
    """Where the line breaks of ``arr`` (bytes as uint8) end: the index of each ``\\n`` and of
    each ``\\r`` not followed by ``\\n``. A ``\\r`` as the last byte counts: the data ends there
    (a caller that may see more bytes holds such a ``\\r`` back, as RecordScanner does)."""
    newlines = np.flatnonzero(arr == NEWLINE)
    returns = np.flatnonzero(arr == CARRIAGE_RETURN)
    if not returns.size:
        return newlines
    following = arr[np.minimum(returns + 1, arr.size - 1)]
    lone = returns[(following != NEWLINE) | (returns == arr.size - 1)]
    if not lone.size:
        return newlines
    return np.sort(np.concatenate([newlines, lone]))


def count_line_breaks(data: bytes) -> int:
    """The number of line breaks in ``data``: ``\\r\\n`` counts once, a lone ``\\r`` once.
    Counted by numpy (3x faster than ``bytes.count`` and mostly without the GIL, which the
    other slices of a chunk need); the ``\\r`` counts only when there is one (``in`` is a
    memchr)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    breaks = int(np.count_nonzero(arr == NEWLINE))
    if b"\r" not in data:
        return breaks
    return breaks + int(np.count_nonzero(arr == CARRIAGE_RETURN)) - data.count(b"\r\n")


def split_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream given in blocks cut anywhere, each with its line break (the
    last one may have none). A ``\\r`` at the end of a block waits for the next block's first
    byte: ``\\r\\n`` is one line break. Memory stays bounded by the longest line, also for files
    with no ``\\n`` at all."""
    pending = b""
    for block in blocks:
        if not block:
            continue
        data = pending + block if pending else block
        pos = 0
        last = len(data)
        for match in LINE_BREAK.finditer(data):
            end = match.end()
            if end == last and data[end - 1] == CARRIAGE_RETURN:
                break  # maybe the first half of \r\n
            yield data[pos:end]
            pos = end
        pending = data[pos:]
    if pending:
        yield pending


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
    content: bool = False  # JSON Lines: a byte other than whitespace since record_start


class RecordScanner:
    """Feeds blocks of a text object in order; reports where non-empty records end.

    ``feed`` returns the absolute end offsets (exclusive, just past the line break) of the records
    that end in the block. A ``\\r`` that is a block's last byte is held back until the next
    block (or ``finish``) tells whether ``\\n`` follows it, so ``state.offset`` may trail the
    bytes fed by one. Raises AmbiguousQuotes when the fast path cannot be trusted.

    ``state.newlines`` and ``newlines_before`` count line breaks of every style (``\\n``,
    ``\\r\\n``, a lone ``\\r``), quoted ones included.
    """

    def __init__(self, start: int, quote: str | None, delimiter: str | None) -> None:
        self.quote = ord(quote) if quote else None
        self.delimiter = ord(delimiter) if delimiter else None
        self.state = ScanState(offset=start, record_start=start)
        self.block_newlines: np.ndarray = _EMPTY
        self._held_return = False  # the last byte fed was a \r not scanned yet

    def feed(self, block: bytes | memoryview) -> np.ndarray:
        arr = np.frombuffer(block, dtype=np.uint8)
        if self._held_return:
            arr = np.concatenate([np.array([CARRIAGE_RETURN], dtype=np.uint8), arr])
        self._held_return = bool(arr.size) and int(arr[-1]) == CARRIAGE_RETURN
        return self._scan(arr[:-1] if self._held_return else arr)

    def _scan(self, arr: np.ndarray) -> np.ndarray:
        """Scans bytes whose every \\r has its next byte in ``arr`` or is the data's last."""
        st = self.state
        newlines = line_break_positions(arr)
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
        st.offset += int(arr.size)
        return ends_abs

    def newlines_before(self, positions: np.ndarray, newlines_before_block: int) -> np.ndarray:
        """Line breaks before each absolute position in the block fed last (its scanned part,
        which starts at ``newlines_before_block`` breaks, ``state.newlines`` before the feed)."""
        return newlines_before_block + np.searchsorted(self.block_newlines, positions)

    def finish(self) -> np.ndarray:
        """The data ends: the ends of the records a held-back ``\\r`` ends, and of a last record
        that has no trailing line break, if there is one."""
        ends = _EMPTY
        if self._held_return:
            self._held_return = False
            ends = self._scan(np.array([CARRIAGE_RETURN], dtype=np.uint8))
        st = self.state
        if st.offset > st.record_start and (self.delimiter is not None or st.content):
            st.record_start = st.offset
            return np.concatenate([ends, np.array([st.offset], dtype=np.int64)])
        return ends

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
        if self.delimiter is None:
            return self._drop_blank(arr, ends_abs)
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

    def _drop_blank(self, arr: np.ndarray, ends_abs: np.ndarray) -> np.ndarray:
        """JSON Lines: drop the records that hold only whitespace (space, tab, line breaks,
        vertical tab, form feed: what ``bytes.strip`` removes)."""
        st = self.state
        content = ~((arr == 32) | ((arr >= 9) & (arr <= 13)))
        if not ends_abs.size:
            st.content = st.content or bool(content.any())
            return ends_abs
        local_ends = ends_abs - st.offset
        starts = np.zeros_like(local_ends)
        starts[1:] = local_ends[:-1]
        kept = np.logical_or.reduceat(content[: int(local_ends[-1])], starts)
        kept[0] |= st.content  # the first record began in an earlier block
        st.content = bool(content[int(local_ends[-1]) :].any())
        st.record_start = int(ends_abs[-1])
        return ends_abs[kept]


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
    inside unquoted fields. Empty lines are skipped, as pyarrow does. ``lines``: the data in
    blocks cut anywhere (they are split into lines here, at every line break style: the csv
    module refuses a string that goes on after a line break outside quotes).

    With ``check_closed``, a last record whose quoted field never closes raises UnclosedQuote
    (the csv module would silently take the rest of the data as the field's value)."""
    position = start
    line_breaks = 0

    def tracked() -> Iterator[str]:
        nonlocal position, line_breaks
        for line in split_lines(lines):
            position += len(line)
            if line.endswith((b"\n", b"\r")):
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
        found = exact_csv_record_ends([data], start, delimiter or ",", quote)
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
    return np.searchsorted(line_break_positions(arr), starts).astype(np.int64)
