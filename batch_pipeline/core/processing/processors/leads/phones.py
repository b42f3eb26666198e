"""Phone numbers as E.164 text (``+15551234567``), or ``N/A``: the ``phonenumbers`` library, with
a vectorized fast path for the common North American shape.

The rule is ``phonenumbers``': the text is parsed with the default region (a number without a
leading ``+`` is read as a number of that region, so ``020 7946 0958`` is London with region
``GB`` but not with ``US``), and kept when it is a possible number (its length fits the
country; ``is_valid_number`` would also check the number ranges, and refuses 555 numbers such
as 555-123-4567). Unlike ``is_possible_number``, a number possible only as a local number
(``555-1234`` in the US: seven digits, no area code) is refused, as its E.164 text would be
wrong. An extension (``555-123-4567 ext 12``) is dropped: E.164 has no place for
one. Anything else (missing, blank, text phonenumbers cannot read, a number of the wrong
length) is ``N/A``.

``phonenumbers`` takes about 40 µs a number (40 s per million distinct numbers), so with the
region ``US`` or ``CA`` the common shape is done by Arrow's kernels first: an optional ``+1``
or ``1``, then exactly ten digits, the area code and the exchange each starting with 2-9,
separated by nothing but `` ()-.``. Its result is ``+1`` and the ten digits, the text
phonenumbers gives for it (``test_lead_rules`` checks the two agree on generated strings); the
other values go to phonenumbers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

MISSING_PHONE = "N/A"
FAST_REGIONS = frozenset({"US", "CA"})
FAST_SEPARATORS = r"[ ().\-]"
FAST_SHAPE = r"^(\+1|1)?[2-9][0-9]{2}[2-9][0-9]{6}$"
FAST_MAX_LENGTH = 64  # longer text (many separators) goes to phonenumbers, which caps the length


def check_region(region: str) -> str:
    """The region code upper-cased; ValueError if phonenumbers does not know it."""
    import phonenumbers  # imported when a leads batch needs it, not with the module

    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r} (expected a code such as 'US', 'GB')")
    return code


def phone_slow(text: str | None, region: str) -> str:
    """One number through phonenumbers: E.164 text, or ``N/A``."""
    import phonenumbers

    if text is None or not text.strip():
        return MISSING_PHONE
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return MISSING_PHONE
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return MISSING_PHONE  # also a number possible only locally (555-1234: no area code)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_fast(texts: pa.Array) -> pa.Array:
    """E.164 text for the values of the North American shape (see the module docstring), null
    for the others (which phonenumbers must read). Region ``US`` or ``CA`` only."""
    digits = pc.replace_substring_regex(texts, FAST_SEPARATORS, "")
    fits = pc.and_(
        pc.match_substring_regex(digits, FAST_SHAPE),
        pc.less_equal(pc.utf8_length(texts), FAST_MAX_LENGTH),
    )
    e164 = pc.binary_join_element_wise("+1", pc.utf8_slice_codeunits(digits, -10), "")
    return pc.if_else(fits, e164, pa.scalar(None, pa.string()))


def phones(texts: pa.Array, region: str) -> pa.Array:
    """E.164 text or ``N/A`` for each of ``texts`` (distinct values, trimmed), never null."""
    region = check_region(region)
    fast = phone_fast(texts) if region in FAST_REGIONS else pa.nulls(len(texts), pa.string())
    rest = pc.is_null(fast)
    slow_texts = texts.filter(rest).to_pylist()
    if not slow_texts:
        return fast
    slow = pa.array([phone_slow(text, region) for text in slow_texts], pa.string())
    return pc.replace_with_mask(fast, rest, slow)
