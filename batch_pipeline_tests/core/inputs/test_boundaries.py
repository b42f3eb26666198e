"""Where records end in CSV and JSONL bytes: the numpy scanner, its exact fallback, and the line
numbers of records."""

from __future__ import annotations

import io
import random

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pytest

from batch_pipeline.core.inputs.boundaries import (
    AmbiguousQuotes,
    RecordScanner,
    UnclosedQuote,
    count_line_breaks,
    exact_csv_record_ends,
    line_break_positions,
    record_ends,
    record_line_offsets,
)


def scan(data: bytes, block: int | None = None, start: int = 0) -> list[int]:
    """Record ends found by feeding ``data`` in blocks of ``block`` bytes (all at once: None)."""
    scanner = RecordScanner(start, '"', ",")
    size = block or max(len(data), 1)
    ends = [scanner.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return [int(e) for e in np.concatenate([*ends, scanner.finish()])]


def exact(data: bytes, check_closed: bool = False) -> list[int]:
    return [end for end, _ in exact_csv_record_ends(io.BytesIO(data), 0, ",", '"', check_closed)]


def test_a_newline_inside_quotes_does_not_end_a_record() -> None:
    data = b'1,"a\nb"\n2,c\n'

    assert scan(data) == [8, 12]


def test_crlf_inside_quotes_does_not_end_a_record() -> None:
    data = b'1,"a\r\nb"\r\n2,c\r\n'

    assert scan(data) == [10, 15]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7])
def test_records_are_found_whatever_the_block_boundaries(block: int) -> None:
    data = b'1,"a\r\n""b"""\r\n\r\n2,"x,\ny"\n3,z'

    assert scan(data, block) == scan(data) == [14, 25, 28]


def test_doubled_quotes_stay_on_the_fast_path() -> None:
    scanner = RecordScanner(0, '"', ",")

    ends = scanner.feed(b'1,"say ""hi"""\n2,""\n')

    assert ends.tolist() == [15, 20]


def test_a_quote_inside_an_unquoted_field_is_ambiguous_for_the_fast_path() -> None:
    scanner = RecordScanner(0, '"', ",")

    with pytest.raises(AmbiguousQuotes) as info:
        scanner.feed(b"1,5'10\"\n2,x\n")

    assert info.value.offset == 6


def test_the_exact_scan_treats_a_quote_inside_an_unquoted_field_as_a_literal() -> None:
    data = b'1,5\'10"\n2,"a\nb"\n3,x'

    assert exact(data) == [8, 16, 19]


def test_record_ends_falls_back_to_the_exact_scan() -> None:
    data = b'1,5\'10"\n2,"a\nb"\n3,x\n'

    assert record_ends(data, 100, '"', ",").tolist() == [108, 116, 120]


def test_empty_lines_are_not_records() -> None:
    data = b"\n1,a\n\r\n\n2,b\n\n"

    assert scan(data) == [5, 12]
    assert exact(data) == [5, 12]


def test_a_last_record_without_a_newline_ends_at_the_end_of_the_data() -> None:
    assert scan(b"1,a\n2,b") == [4, 7]


def test_a_trailing_carriage_return_alone_is_not_a_record() -> None:
    assert scan(b"1,a\r\n\r") == [5]


def test_the_scanner_knows_when_the_data_ends_inside_quotes() -> None:
    scanner = RecordScanner(0, '"', ",")

    scanner.feed(b'1,a\n2,"open\n3,b\n')

    assert scanner.inside_quotes


def test_the_exact_scan_reports_a_quote_that_never_closes() -> None:
    data = b'1,5\'10"\n\n2,"open\n3,b\n'

    with pytest.raises(UnclosedQuote) as info:
        exact(data, check_closed=True)

    assert (info.value.offset, info.value.line_breaks) == (9, 2)


def test_the_exact_scan_accepts_a_closing_quote_at_the_very_end() -> None:
    assert exact(b'1,5\'10"\n2,"a\nb"', check_closed=True) == [8, 15]


def test_jsonl_records_end_at_every_newline() -> None:
    scanner = RecordScanner(0, None, None)

    ends = scanner.feed(b'{"a": "\\"x"}\n\n{"a": 2}\r\n')

    assert ends.tolist() == [13, 24]


def test_line_offsets_count_the_lines_of_multi_line_records_and_empty_lines() -> None:
    # line 0: 1,"a   line 1: b"   line 2: (empty)   line 3: 2,c   line 4: 3,"x   line 5: y"
    data = b'1,"a\r\nb"\r\n\r\n2,c\n3,"x\ny"\n'

    offsets = record_line_offsets(data, '"', ",", np.array([0, 1, 2]))

    assert offsets.tolist() == [0, 3, 4]


def test_line_offsets_with_a_literal_quote_use_the_exact_scan() -> None:
    data = b'1,5\'10"\n2,"a\nb"\n\n3,x\n'

    offsets = record_line_offsets(data, '"', ",", np.array([2, 0]))

    assert offsets.tolist() == [4, 0]


# Line breaks: \n, \r\n and a lone \r (classic Mac files) all end a record, as in pyarrow -------


def test_a_lone_carriage_return_ends_a_record() -> None:
    data = b'1,a\r2,"b"\r3,c'

    assert scan(data) == exact(data) == [4, 10, 13]


def test_a_quoted_carriage_return_stays_inside_its_record() -> None:
    data = b'1,"a\rb"\r2,"x\r\ny\nz"\r3,c\r'

    assert scan(data) == exact(data) == [8, 19, 23]


def test_empty_lines_of_any_style_are_not_records() -> None:
    data = b"\r1,a\r\r\r\n\n2,b\r\r"

    assert scan(data) == exact(data) == [5, 13]


@pytest.mark.parametrize("block", [1, 2, 3, 4, 5, 7])
def test_a_carriage_return_at_the_end_of_a_block_waits_for_the_next_byte(block: int) -> None:
    # CR LF split across blocks is one line break; CR then anything else is one too.
    data = b'1,a\r\n2,b\r3,"c\r"\r\r\n4,d\r'

    assert scan(data, block) == scan(data) == exact(data) == [5, 9, 16, 22]


@pytest.mark.parametrize("block", [1, 3, 7])
def test_line_breaks_are_counted_in_every_style(block: int) -> None:
    # breaks: \r\n (1), \r (2), \r inside quotes (3), \r (4), \r\n (5), \n (6)
    data = b'1,a\r\n2,b\r3,"c\r"\r\r\n\n4,d'
    scanner = RecordScanner(0, '"', ",")
    for i in range(0, len(data), block):
        scanner.feed(data[i : i + block])
    scanner.finish()

    assert scanner.state.newlines == 6
    assert [b for _, b in exact_csv_record_ends([data], 0, ",", '"')] == [1, 2, 4, 6]


def test_the_exact_scan_reads_carriage_return_lines_with_literal_quotes() -> None:
    data = b'1,5\'10"\r2,"a\rb"\r\r3,x'

    assert exact(data) == [8, 16, 20]
    assert exact(data, check_closed=True) == [8, 16, 20]


def test_the_exact_scan_takes_blocks_cut_anywhere() -> None:
    data = b'1,5\'10"\r\n2,"a\rb"\r3,x\r'
    blocks = [data[i : i + 3] for i in range(0, len(data), 3)]

    found = list(exact_csv_record_ends(blocks, 0, ",", '"', check_closed=True))

    assert found == [(9, 1), (17, 3), (21, 4)]


def test_line_offsets_count_carriage_return_lines() -> None:
    # line 0: 1,"a   line 1: b"   line 2: (empty)   line 3: 2,c   line 4: 3,"x   line 5: y"
    data = b'1,"a\rb"\r\r2,c\r\n3,"x\ry"\r'

    assert record_line_offsets(data, '"', ",", np.array([0, 1, 2])).tolist() == [0, 3, 4]
    literal = b"1,5'10\"\r" + data
    assert record_line_offsets(literal, '"', ",", np.array([0, 1, 3])).tolist() == [0, 1, 5]


def test_jsonl_records_end_at_a_lone_carriage_return() -> None:
    scanner = RecordScanner(0, None, None)

    ends = scanner.feed(b'{"a": 1}\r{"a": 2}\r\n\r{"a": 3}')

    assert [*ends.tolist(), *scanner.finish().tolist()] == [9, 19, 28]


def test_counting_line_breaks_counts_a_carriage_return_line_feed_once() -> None:
    assert count_line_breaks(b"a\r\nb\rc\n\r\r\nd\r") == 6
    assert line_break_positions(np.frombuffer(b"a\r\nb\rc\r", np.uint8)).tolist() == [2, 4, 6]


@pytest.mark.parametrize("seed", range(20))
def test_record_ends_match_pyarrow_for_random_line_endings(seed: int) -> None:
    """Random records with every line break style between and inside quoted fields: the numpy
    scan (in random blocks) and the exact scan find the records pyarrow reads."""
    rng = random.Random(seed)
    breaks = ["\n", "\r\n", "\r"]
    lines = []
    for i in range(200):
        value = rng.choice(["x", "a" + rng.choice(breaks) + "b", 'say ""hi""', ""])
        field = f'"{value}"' if rng.random() < 0.7 else "plain"
        lines.append(f"{i},{field}" + rng.choice(breaks) * rng.choice([1, 1, 1, 2]))
    data = "".join(lines).encode()
    expected = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=["a", "b"]),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    ).num_rows
    block = rng.randint(1, 64)

    ends = scan(data, block)

    assert len(ends) == expected == 200
    assert ends == scan(data) == exact(data)
    # A chunk's record ends are the same whether it is read from its own start or not.
    assert record_ends(data[ends[99] :], ends[99], '"', ",").tolist() == ends[100:]


@pytest.mark.parametrize("block", [1, 2, 5, 64])
def test_jsonl_lines_of_only_whitespace_are_not_records(block: int) -> None:
    """As for pyarrow's JSON reader and the line-by-line fallback (which strips each line)."""
    data = b'{"a": "1"}\n  \n\t\r\n{"a": " "}\r \x0c\r\n{"a": "3"}\n  '
    scanner = RecordScanner(0, None, None)
    ends = [scanner.feed(data[i : i + block]) for i in range(0, len(data), block)]

    found = np.concatenate([*ends, scanner.finish()]).tolist()

    assert found == [11, 28, 43]
    assert len(found) == pajson.read_json(io.BytesIO(data.replace(b"\x0c", b" "))).num_rows
