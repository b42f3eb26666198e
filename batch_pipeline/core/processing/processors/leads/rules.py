"""The deterministic rules of ``leads``: which source columns hold which field, and each field's
value standardized, vectorized over an Arrow column.

Every ``standardize_*`` function takes a column of any Arrow type (text usually; ints, floats,
booleans, dates from Excel or Parquet; large strings, dictionary-encoded or chunked) and returns
a ``pa.string()`` Array of the same length. A value that is not text is read as its text, as
``batch_pipeline.core.columns.values.array_text`` writes it (``5551234567.0`` as
``5551234567``), except that NaN is missing (pandas' empty cell). Null, empty and
whitespace-only values are missing: null, except a phone, which is ``N/A``.

The per-value work in Python (names, companies, titles, phones phonenumbers must read) is done
once per distinct value: the column is dictionary-encoded, the work done on its dictionary, and
the results taken back by the indices. E-mails, industries, ``source`` and the common North
American phone shape are done by Arrow's kernels alone.

The rules, field by field:

- whitespace (Unicode spaces too) is collapsed to one space and trimmed, in every field;
- ``email``: lower-cased; valid when it is ``local@domain``: the local part of letters, digits
  (any script: internationalized addresses are kept) and ``!#$%&'*+/=?^_`{|}~-``, dots between
  them, at most 64 characters; the domain dot-separated labels of letters, digits and inner
  ``-``, its last label (the top-level domain) two letters or more or ``xn--`` punycode; the
  whole at most 254 characters. Anything else (``John <john@x.com>``, ``mailto:`` included) is
  null with a reason;
- ``phone``: see ``phones`` (E.164 or ``N/A``, extensions dropped); digits written with a
  trailing ``.0`` (a spreadsheet's float as text) are read as those digits;
- ``name``, ``company``, ``title``: see ``words``;
- ``industry``: one of ``INDUSTRIES``, matched case-insensitively, or a synonym of one
  (``-``/``_`` read as spaces, ``&`` as ``and``: ``Real-Estate``, ``Oil & Gas``); any other
  value is ``Other``;
- ``source`` (and any plain text): whitespace collapsed, as written.

Before any of these, the processor reads each field's raw values with ``field_text``: text in
Unicode NFC (an accented letter written as a letter and a combining mark is the same letter, so
``josé@x.com`` is one e-mail however it was typed), NUL characters removed (no database keeps
them in text), and a blank value or a placeholder (``PLACEHOLDERS``: ``N/A``, ``n.a.``,
``#N/A``, ``NA``, ``nan``, ``null``, ``none``, ``nil``, ``-``, ``--``, ``?``, in any case) missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.columns.values import EXACT_FLOAT_INT, array_text
from batch_pipeline.core.processing.processors.leads.phones import MISSING_PHONE, phones
from batch_pipeline.core.processing.processors.leads.tables import (
    DEFAULT_ACRONYMS,
    DEFAULT_ALIASES,
    DEFAULT_COMPANY_SUFFIXES,
    DEFAULT_INDUSTRY_SYNONYMS,
    FIELDS,
    INDUSTRIES,
)
from batch_pipeline.core.processing.processors.leads.words import (
    Suffixes,
    company_case,
    name_case,
    title_case,
)

__all__ = [
    "DEFAULT_ACRONYMS",
    "DEFAULT_ALIASES",
    "DEFAULT_COMPANY_SUFFIXES",
    "DEFAULT_INDUSTRY_SYNONYMS",
    "FIELDS",
    "INDUSTRIES",
    "PLACEHOLDERS",
    "field_text",
    "match_columns",
    "standardize_company",
    "standardize_email",
    "standardize_industry",
    "standardize_name",
    "standardize_phone",
    "standardize_text",
    "standardize_title",
]

Values: TypeAlias = pa.Array | pa.ChunkedArray
# The white space other than " " (what Python's str.split and Arrow's trim split on; RE2's \s
# is ASCII only); ODD_SPACE: what a value needs collapsed for.
WHITE = (
    r"\t\n\v\f\r\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
    r"\x{205f}\x{3000}"
)
ODD_SPACE = f"  |[{WHITE}]"
EMAIL_LOCAL = r"[\p{L}\p{N}!#$%&'*+/=?^_`{|}~-]+(\.[\p{L}\p{N}!#$%&'*+/=?^_`{|}~-]+)*"
EMAIL_DOMAIN = r"([\p{L}\p{N}]([\p{L}\p{N}-]*[\p{L}\p{N}])?\.)+(\p{L}{2,}|xn--[a-z0-9-]+)"
EMAIL = f"^{EMAIL_LOCAL}@{EMAIL_DOMAIN}$"
EMAIL_LOCAL_MAX, EMAIL_MAX = 64, 254
SHOWN_MAX = 60  # a refused value is shown in its reason up to this many characters
OTHER_INDUSTRY = "Other"


def _text(values: Values) -> pa.Array:
    """The column as a ``pa.string()`` Array: each value's text (see the module docstring)."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 1:
            return _text(values.chunk(0))
        if values.num_chunks == 0:
            return pa.array([], pa.string())
        return pa.concat_arrays([_text(chunk) for chunk in values.chunks])
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _text(values.dictionary).take(values.indices)
    if pa.types.is_floating(kind):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, kind), values)
        if pa.types.is_float64(kind):
            return _float_text(values)
    if pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return array_text(values)  # vectorized casts
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind) or pa.types.is_null(kind):
        return array_text(values)
    try:  # floats, times, decimals: through Python, once per distinct value
        encoded = pc.dictionary_encode(values)
    except pa.ArrowNotImplementedError:
        return array_text(values)
    return array_text(encoded.dictionary).take(encoded.indices)


PLACEHOLDERS = ("n/a", "n.a.", "#n/a", "na", "nan", "null", "none", "nil", "-", "--", "?")


def field_text(values: Values) -> pa.Array:
    """A field's raw values as text (see the module docstring): NFC, without NUL, trimmed,
    null where blank or a placeholder."""
    texts = _text(values)
    texts = pc.utf8_normalize(texts, "NFC")
    texts = pc.replace_substring(texts, "\x00", "")
    texts = _trim(texts)
    placeholder = pc.is_in(pc.utf8_lower(texts), value_set=pa.array(PLACEHOLDERS, pa.string()))
    return _null_where(texts, pc.fill_null(placeholder, False))


def _null_where(texts: pa.Array, mask: pa.Array) -> pa.Array:
    """``texts`` with null where ``mask`` holds (``mask`` without nulls)."""
    count = pc.sum(mask).as_py() or 0
    return pc.replace_with_mask(texts, mask, pa.nulls(count, texts.type)) if count else texts


def _float_text(values: pa.Array) -> pa.Array:
    """float64s as ``array_text`` writes them: whole numbers within 2**53 by Arrow's casts
    (``5551234567.0`` as ``5551234567``), the others through Python once per distinct value."""
    whole = pc.and_(
        pc.equal(pc.floor(values), values), pc.less_equal(pc.abs(values), EXACT_FLOAT_INT)
    )
    whole = pc.fill_null(whole, False)
    ints = pc.if_else(whole, values, 0.0).cast(pa.int64()).cast(pa.string())
    rest = pc.and_(pc.invert(whole), pc.is_valid(values))
    if pc.any(rest).as_py():
        others = pc.dictionary_encode(values.filter(rest))
        ints = pc.replace_with_mask(ints, rest, array_text(others.dictionary).take(others.indices))
    return _null_where(ints, pc.is_null(values))


def _trim(texts: pa.Array) -> pa.Array:
    """Trimmed; empty -> null."""
    texts = pc.utf8_trim_whitespace(texts)
    return _null_where(texts, pc.fill_null(pc.equal(texts, ""), False))


def _squeeze(texts: pa.Array) -> pa.Array:
    """Whitespace collapsed and trimmed; empty -> null. The regex replaces only in the values
    that need it (two spaces in a row, or a white space other than a space)."""
    texts = _trim(texts)
    odd = pc.fill_null(pc.match_substring_regex(texts, ODD_SPACE), False)
    if pc.any(odd).as_py():
        fixed = pc.replace_substring_regex(texts.filter(odd), f"[ {WHITE}]+", " ")
        texts = pc.replace_with_mask(texts, odd, fixed)
    return texts


def _distinct(values: Values) -> tuple[pa.Array, pa.Array]:
    """(the distinct texts, squeezed, each once; per row the index of its text, null if none)."""
    raw = pc.dictionary_encode(_text(values))
    squeezed = pc.dictionary_encode(_squeeze(raw.dictionary))
    return squeezed.dictionary, squeezed.indices.take(raw.indices)


def _per_distinct(values: Values, rule: Callable[[str], str]) -> pa.Array:
    """``rule`` applied once per distinct squeezed text; missing values null."""
    distinct, indices = _distinct(values)
    results = pa.array([rule(text) for text in distinct.to_pylist()], pa.string())
    return results.take(indices)


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-_.]+", "", name).casefold()


def match_columns(
    columns: Sequence[str], aliases: Mapping[str, Sequence[str]] = DEFAULT_ALIASES
) -> dict[str, list[str]]:
    """For each field of FIELDS, the source columns that hold it, best first (every field is a
    key; [] when no column holds it).

    A column matches a field when its name, ignoring case, whitespace, ``-``, ``_`` and ``.``,
    is the field's name or one of its aliases. A column is used for one field only: the one
    where it is the earlier alias (ties: the field earlier in FIELDS). A field's columns are
    ordered by their alias (earlier alias first), then as they come in ``columns``. Keys of
    ``aliases`` that are not fields are ignored.
    """
    choices: dict[str, tuple[int, int, str]] = {}  # header key -> (alias rank, field rank, field)
    for field_rank, field in enumerate(FIELDS):
        keys = dict.fromkeys(_header_key(alias) for alias in (field, *aliases.get(field, ())))
        for rank, key in enumerate(keys):
            choice = (rank, field_rank, field)
            if key and (key not in choices or choice < choices[key]):
                choices[key] = choice
    found: dict[str, list[tuple[int, int, str]]] = {field: [] for field in FIELDS}
    for position, column in enumerate(columns):
        best = choices.get(_header_key(column))
        if best is not None:
            found[best[2]].append((best[0], position, column))
    return {field: [column for *_, column in sorted(hits)] for field, hits in found.items()}


def standardize_email(values: Values) -> tuple[pa.Array, pa.Array]:
    """(emails, reasons): lower-cased, null where missing or invalid; a reason where null
    (``email: missing`` or ``email: not an e-mail address (got '...')``), else null."""
    texts = _trim(_text(values))
    emails = pc.utf8_lower(texts)
    valid = pc.and_(
        pc.and_(
            pc.match_substring_regex(emails, EMAIL),
            pc.less_equal(pc.utf8_length(emails), EMAIL_MAX),
        ),
        pc.match_substring_regex(emails, f"^[^@]{{1,{EMAIL_LOCAL_MAX}}}@"),
    )
    valid = pc.fill_null(valid, False)
    wrong = pc.invert(valid)
    shown = texts.filter(wrong)
    long = pc.greater(pc.utf8_length(shown), SHOWN_MAX)
    if pc.any(long).as_py():
        cut = pc.utf8_slice_codeunits(shown, 0, SHOWN_MAX - 3)
        shown = pc.if_else(long, pc.binary_join_element_wise(cut, "...", ""), shown)
    why = pc.binary_join_element_wise("email: not an e-mail address (got '", shown, "')", "")
    why = pc.fill_null(why, "email: missing")
    reasons = pc.replace_with_mask(pa.nulls(len(texts), pa.string()), wrong, why)
    return _null_where(emails, wrong), reasons


def standardize_phone(values: Values, default_region: str = "US") -> pa.Array:
    """E.164 text (``+15551234567``) or ``N/A``, never null; see ``phones``. ValueError for a
    region phonenumbers does not know."""
    encoded = pc.dictionary_encode(_text(values))
    distinct = pc.utf8_trim_whitespace(encoded.dictionary)
    # Digits written as a spreadsheet's float (``15551234567.0``, from a CSV that pandas
    # wrote) are those digits.
    distinct = pc.replace_substring_regex(distinct, r"^(\+?[0-9]{6,})\.0+$", r"\1")
    return pc.fill_null(phones(distinct, default_region).take(encoded.indices), MISSING_PHONE)


def standardize_name(values: Values) -> pa.Array:
    """Person names re-cased (see ``words``); missing -> null."""
    return _per_distinct(values, name_case)


def standardize_company(
    values: Values, suffixes: Mapping[str, str] = DEFAULT_COMPANY_SUFFIXES
) -> pa.Array:
    """Company names with a uniform legal suffix (see ``words``); missing -> null."""
    table = Suffixes(suffixes)
    return _per_distinct(values, lambda text: company_case(text, table))


def standardize_title(values: Values, acronyms: Collection[str] = DEFAULT_ACRONYMS) -> pa.Array:
    """Job titles title-cased, acronyms as written in ``acronyms`` (see ``words``)."""
    table = {acronym.lower(): acronym for acronym in acronyms}
    return _per_distinct(values, lambda text: title_case(text, table))


def _industry_key(texts: pa.Array) -> pa.Array:
    """How an industry is matched: lower-case, ``-``/``_`` as spaces, ``&`` as ``and``."""
    texts = pc.replace_substring_regex(pc.utf8_lower(texts), r"[-_]", " ")
    texts = pc.replace_substring(texts, "&", " and ")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, f"[ {WHITE}]+", " "))


def standardize_industry(
    values: Values,
    synonyms: Mapping[str, str] = DEFAULT_INDUSTRY_SYNONYMS,
    industries: Sequence[str] = INDUSTRIES,
) -> pa.Array:
    """One of ``industries`` (itself or by a synonym), ``Other`` for any other value; missing ->
    null. ValueError if a synonym names an industry not in ``industries``."""
    unknown = sorted({industry for industry in synonyms.values() if industry not in industries})
    if unknown:
        raise ValueError(f"industry synonyms name industries not in the list: {unknown}")
    names = [*synonyms.values(), *industries]  # an industry's own name wins over a synonym
    keys = _industry_key(pa.array([*synonyms.keys(), *industries], pa.string())).to_pylist()
    table = dict(zip(keys, names, strict=True))
    distinct, indices = _distinct(values)
    found = pc.index_in(_industry_key(distinct), pa.array(list(table), pa.string()))
    results = pc.if_else(
        pc.is_null(found),
        pc.if_else(pc.is_null(distinct), pa.scalar(None, pa.string()), OTHER_INDUSTRY),
        pa.array(list(table.values()), pa.string()).take(found),
    )
    return results.take(indices)


def standardize_text(values: Values) -> pa.Array:
    """Whitespace collapsed and trimmed; missing -> null."""
    return _squeeze(_text(values))
