"""The rules of ``leads``: column matching and each field's standardization, on tricky values,
every Arrow input shape, and the phone fast path against phonenumbers itself."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_pipeline.core.columns.values import value_text
from batch_pipeline.core.processing.processors.leads.phones import phone_fast, phone_slow
from batch_pipeline.core.processing.processors.leads.rules import (
    DEFAULT_ACRONYMS,
    DEFAULT_COMPANY_SUFFIXES,
    DEFAULT_INDUSTRY_SYNONYMS,
    FIELDS,
    INDUSTRIES,
    match_columns,
    standardize_company,
    standardize_email,
    standardize_industry,
    standardize_name,
    standardize_phone,
    standardize_text,
    standardize_title,
)


def one(rule: Callable[..., pa.Array], value: Any, **options: Any) -> Any:
    result = rule(pa.array([value]), **options)
    assert isinstance(result, pa.Array)
    assert result.type == pa.string()
    return result[0].as_py()


# -- match_columns ---------------------------------------------------------------------------


def test_match_columns_lenient_spellings() -> None:
    columns = ["Full Name", "E-mail", "Phone Number", "Company Name", "Job Title", "Sector"]
    columns += ["Lead Source", "Notes"]
    assert match_columns(columns) == {
        "name": ["Full Name"],
        "email": ["E-mail"],
        "phone": ["Phone Number"],
        "company": ["Company Name"],
        "title": ["Job Title"],
        "industry": ["Sector"],
        "source": ["Lead Source"],
    }


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("EMAIL", "email"),
        ("email_address", "email"),
        ("Email Address", "email"),
        ("e.mail", "email"),
        ("Mobile", "phone"),
        ("telephone", "phone"),
        ("Organization", "company"),
        ("organisation", "company"),
        ("Position", "title"),
        ("contact-name", "name"),
        ("  Name ", "name"),
        ("INDUSTRY", "industry"),
        ("lead_source", "source"),
    ],
)
def test_match_columns_one_header(column: str, field: str) -> None:
    found = match_columns([column])
    assert found[field] == [column]
    assert set(found) == set(FIELDS)
    assert all(found[other] == [] for other in FIELDS if other != field)


def test_match_columns_best_first_and_unmatched_empty() -> None:
    found = match_columns(["Mobile", "Work Email", "Phone", "Email", "Cell", "Something"])
    assert found["phone"] == ["Phone", "Mobile", "Cell"]  # by alias rank, not by position
    assert found["email"] == ["Email", "Work Email"]
    assert found["name"] == [] and found["company"] == []


def test_match_columns_same_field_twice_in_column_order() -> None:
    assert match_columns(["email", "E-Mail"])["email"] == ["email", "E-Mail"]


def test_match_columns_a_column_is_used_once() -> None:
    # "contact" is the second alias of three fields: the tie goes to the earliest field.
    aliases = {"name": ("name", "contact"), "company": ("contact",), "phone": ("contact",)}
    found = match_columns(["Contact", "Company"], aliases)
    assert found["name"] == ["Contact"]
    assert found["company"] == ["Company"]
    assert found["phone"] == []
    # Else the field where it is the earlier alias: phone's first alias after "phone".
    aliases = {"name": ("full name", "contact"), "phone": ("contact",)}
    found = match_columns(["contact", "Full-Name"], aliases)
    assert found == {**found, "name": ["Full-Name"], "phone": ["contact"]}
    # The default aliases share no spelling between fields.
    found = match_columns(["Contact", "Name", "Mail", "Account", "Role"])
    assert [column for columns in found.values() for column in columns] == [
        "Name",
        "Contact",
        "Mail",
        "Account",
        "Role",
    ]


def test_match_columns_field_name_always_matches() -> None:
    found = match_columns(["phone", "Tel."], {"phone": ("tel",)})
    assert found["phone"] == ["phone", "Tel."]
    assert found["email"] == []


# -- email -----------------------------------------------------------------------------------

BAD = "email: not an e-mail address (got '{}')"
MISSING = "email: missing"


@pytest.mark.parametrize(
    ("value", "email", "reason"),
    [
        ("john@example.com", "john@example.com", None),
        ("  John.Smith@Example.COM \t", "john.smith@example.com", None),
        ("o'neil+tag@mail.example.co.uk", "o'neil+tag@mail.example.co.uk", None),
        ("JÖRG@Exämple.DE", "jörg@exämple.de", None),
        ("x@xn--80akhbyknj4f.xn--p1ai", "x@xn--80akhbyknj4f.xn--p1ai", None),
        ("john@", None, BAD.format("john@")),
        ("@x.com", None, BAD.format("@x.com")),
        ("a b@x.com", None, BAD.format("a b@x.com")),
        ("john@@x.com", None, BAD.format("john@@x.com")),
        ("john@x", None, BAD.format("john@x")),
        ("john@x.c", None, BAD.format("john@x.c")),
        ("john..smith@x.com", None, BAD.format("john..smith@x.com")),
        (".john@x.com", None, BAD.format(".john@x.com")),
        ("john@-x.com", None, BAD.format("john@-x.com")),
        ("John <john@x.com>", None, BAD.format("John <john@x.com>")),
        ("  Not An Email ", None, BAD.format("Not An Email")),
        ("a" * 65 + "@x.com", None, BAD.format("a" * 57 + "...")),
        (None, None, MISSING),
        ("", None, MISSING),
        (" \t\u00a0 ", None, MISSING),
    ],
)
def test_email(value: str | None, email: str | None, reason: str | None) -> None:
    emails, reasons = standardize_email(pa.array([value], pa.string()))
    assert (emails.to_pylist(), reasons.to_pylist()) == ([email], [reason])


def test_email_lengths_and_shapes() -> None:
    local64 = "a" * 64 + "@x.com"
    emails, reasons = standardize_email(pa.chunked_array([[local64], ["B@X.IO", "7"]]))
    assert emails.to_pylist() == [local64, "b@x.io", None]
    assert reasons.to_pylist() == [None, None, BAD.format("7")]
    emails, reasons = standardize_email(pa.array([5, None]))
    assert emails.to_pylist() == [None, None]
    assert reasons.to_pylist() == [BAD.format("5"), MISSING]
    _, reasons = standardize_email(pa.array([True]))
    assert reasons.to_pylist() == [BAD.format("true")]
    encoded = pa.array(["A@B.CO", None, "A@B.CO", "bad"]).dictionary_encode()
    emails, reasons = standardize_email(encoded)
    assert emails.to_pylist() == ["a@b.co", None, "a@b.co", None]
    assert reasons.to_pylist() == [None, MISSING, None, BAD.format("bad")]
    emails, reasons = standardize_email(pa.array([], pa.string()))
    assert len(emails) == len(reasons) == 0


# -- phone -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region", "phone"),
    [
        ("(555) 123-4567", "US", "+15551234567"),
        ("555.123.4567", "US", "+15551234567"),
        ("555-123-4567", "US", "+15551234567"),
        ("+1 555 123 4567", "US", "+15551234567"),
        ("1-555-123-4567", "US", "+15551234567"),
        ("5551234567", "US", "+15551234567"),
        ("  (212) 555-0100  ", "US", "+12125550100"),
        ("555-123-4567 ext. 89", "US", "+15551234567"),  # the extension is dropped
        ("416 555 0199", "CA", "+14165550199"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07700 900123", "GB", "+447700900123"),
        ("020 7946 0958", "US", "N/A"),  # read as an American number: 11 digits
        ("+49 30 901820", "US", "+4930901820"),
        ("030 901820", "DE", "+4930901820"),
        ("+33 1 42 68 53 00", "US", "+33142685300"),
        ("01 42 68 53 00", "FR", "+33142685300"),
        ("+91 98765 43210", "US", "+919876543210"),
        ("098765 43210", "IN", "+919876543210"),
        ("+1 555 123 4567", "GB", "+15551234567"),
        ("555 123 4567", "gb", "+445551234567"),  # a British number
        ("12345", "US", "N/A"),
        ("555-1234", "US", "N/A"),  # 7 digits: possible only as a local number
        ("not a phone", "US", "N/A"),
        ("+", "US", "N/A"),
        ("--", "US", "N/A"),
        ("", "US", "N/A"),
        ("   ", "US", "N/A"),
        (None, "US", "N/A"),
    ],
)
def test_phone(value: str | None, region: str, phone: str) -> None:
    assert one(standardize_phone, value, default_region=region) == phone


def test_phone_numbers_from_excel_and_parquet() -> None:
    floats = pa.array([5551234567.0, 15551234567.0, None, float("nan"), 2125550100.5])
    assert standardize_phone(floats).to_pylist() == [
        "+15551234567",
        "+15551234567",
        "N/A",
        "N/A",
        "N/A",
    ]
    ints = pa.array([5551234567, 442079460958, None], pa.int64())
    assert standardize_phone(ints).to_pylist() == [
        "+15551234567",
        "N/A",  # no +: a US number, too long
        "N/A",
    ]
    assert standardize_phone(pa.array([442079460958]), "GB").to_pylist() == ["+442079460958"]
    assert standardize_phone(pa.array([True, None])).to_pylist() == ["N/A", "N/A"]
    assert standardize_phone(pa.array([None, None])).to_pylist() == ["N/A", "N/A"]


def test_phone_array_shapes() -> None:
    chunked = pa.chunked_array([["555.123.4567", None], [], ["+44 20 7946 0958"]])
    assert standardize_phone(chunked).to_pylist() == ["+15551234567", "N/A", "+442079460958"]
    encoded = pa.array(["(555) 123-4567", "x", None, "(555) 123-4567"]).dictionary_encode()
    result = standardize_phone(encoded)
    assert result.type == pa.string()
    assert result.to_pylist() == ["+15551234567", "N/A", "N/A", "+15551234567"]
    large = pa.array(["5551234567"], pa.large_string())
    assert standardize_phone(large).to_pylist() == ["+15551234567"]
    assert standardize_phone(pa.chunked_array([], pa.string())).to_pylist() == []


def test_phone_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phone region"):
        standardize_phone(pa.array(["5551234567"]), default_region="XX")


# The fast path (Arrow kernels) must agree with phonenumbers wherever it answers.
PHONE_CHARS = "0123456789 ()-.+"
PREFIXES = ["", "+1", "1", "+ 1", "(+1)", "+(1)", "1 (", "+1-", "(1)", "+", "++1", "11", "-", "0"]


def _generated_phone(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return "".join(rng.choice(PHONE_CHARS) for _ in range(rng.randint(0, 20)))
    text = rng.choice(PREFIXES)
    for digit in rng.choices("0123456789", k=rng.choice([9, 10, 10, 10, 11])):
        if rng.random() < 0.3:
            text += rng.choice(" ()-.")
        text += digit
    return text + (rng.choice(" ()-.") if rng.random() < 0.3 else "")


def _fast_agrees(texts: list[str]) -> int:
    fast = phone_fast(pa.array(texts, pa.string())).to_pylist()
    answered = 0
    for text, result in zip(texts, fast, strict=True):
        if result is not None:
            answered += 1
            assert result == phone_slow(text, "US") == phone_slow(text, "CA"), text
    return answered


def test_phone_fast_path_agrees_with_phonenumbers_on_a_sample() -> None:
    rng = random.Random(15)
    texts = [_generated_phone(rng) for _ in range(20_000)]
    assert _fast_agrees(texts) > 2_000  # the sample reaches the fast path


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    digits=st.text("0123456789", min_size=8, max_size=12),
    separators=st.lists(st.text(" ()-.", max_size=2), min_size=13, max_size=13),
    noise=st.text(PHONE_CHARS, max_size=20),
    shape=st.booleans(),
)
def test_phone_fast_path_property(
    prefix: str, digits: str, separators: list[str], noise: str, shape: bool
) -> None:
    text = prefix + "".join(sep + d for sep, d in zip(separators, digits, strict=False))
    _fast_agrees([text + separators[-1] if shape else noise])


# -- name --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("john smith", "John Smith"),
        ("JOHN SMITH", "John Smith"),
        ("mcdonald", "McDonald"),
        ("RONALD MCDONALD", "Ronald McDonald"),
        ("O'NEIL", "O'Neil"),
        ("shaquille o'neal", "Shaquille O'Neal"),
        ("d'angelo", "D'Angelo"),
        ("van der berg", "Van der Berg"),
        ("pieter VAN DER BERG", "Pieter van der Berg"),
        ("ludwig van beethoven", "Ludwig van Beethoven"),
        ("Martin Van Buren", "Martin Van Buren"),  # written with care: kept
        ("maria de la cruz", "Maria de la Cruz"),
        ("ANNA LE", "Anna Le"),  # the last word is the surname, not a particle
        ("JEAN-LUC PICARD", "Jean-Luc Picard"),
        ("mary smith-jones", "Mary Smith-Jones"),
        ("DeShawn Jackson", "DeShawn Jackson"),
        ("douglas MacArthur", "Douglas MacArthur"),
        ("macarthur", "Macarthur"),  # Mac is not re-cased: Mack, Macy
        ("McDONALD", "McDONALD"),  # mixed case: kept
        ("  mary   ann  ", "Mary Ann"),
        ("john smith jr", "John Smith Jr."),
        ("JOHN SMITH JR.", "John Smith Jr."),
        ("john smith sr", "John Smith Sr."),
        ("henry ford iii", "Henry Ford III"),
        ("Henry Ford Ii", "Henry Ford II"),
        ("JOHN Q. PUBLIC", "John Q. Public"),
        ("josé ÁLVAREZ", "José Álvarez"),
        ("a\u00a0b\tc", "A B C"),
        ("", None),
        (" \n ", None),
        (None, None),
    ],
)
def test_name(value: str | None, name: str | None) -> None:
    assert one(standardize_name, value) == name


# -- company -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "company"),
    [
        ("acme inc", "Acme Inc."),
        ("Acme, Inc.", "Acme Inc."),
        ("Acme Inc", "Acme Inc."),
        ("Acme,Inc.", "Acme Inc."),
        ("ACME INCORPORATED", "ACME Inc."),
        ("foo l.l.c.", "Foo LLC"),
        ("Foo, LLC", "Foo LLC"),
        ("Bar Ltd", "Bar Ltd."),
        ("bar limited", "Bar Ltd."),
        ("globex corporation", "Globex Corp."),
        ("Initech Corp.", "Initech Corp."),
        ("siemens ag", "Siemens AG"),
        ("Muster GMBH", "Muster GmbH"),
        ("Foo Co., Ltd.", "Foo Co., Ltd."),
        ("foo co ltd", "Foo Co., Ltd."),
        ("Tata Consultancy Pvt. Ltd.", "Tata Consultancy Pvt. Ltd."),
        ("bank of america corp", "Bank of America Corp."),
        ("the home depot", "The Home Depot"),
        ("IBM", "IBM"),
        ("eBay Inc", "eBay Inc."),
        ("at&t", "At&T"),
        ("Inc", "Inc"),  # no name before it: not a suffix
        ("Incorporated Widgets", "Incorporated Widgets"),  # not trailing
        ("  acme   widgets  ", "Acme Widgets"),
        ("", None),
        (None, None),
    ],
)
def test_company(value: str | None, company: str | None) -> None:
    assert one(standardize_company, value) == company


def test_company_own_suffix_table() -> None:
    suffixes = {"s.a.": "SA", "inc": "Incorporated"}
    result = standardize_company(pa.array(["Foo S.A.", "Foo Inc.", "Foo LLC"]), suffixes)
    assert result.to_pylist() == ["Foo SA", "Foo Incorporated", "Foo LLC"]
    assert DEFAULT_COMPANY_SUFFIXES["l.l.c."] == "LLC"


# -- title ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "title"),
    [
        ("vp of sales", "VP of Sales"),
        ("ceo", "CEO"),
        ("Ceo", "CEO"),
        ("SALES MANAGER", "Sales Manager"),
        ("head of it", "Head of IT"),
        ("Head Of Marketing And PR", "Head of Marketing and PR"),
        ("co-founder & cto", "Co-Founder & CTO"),
        ("svp, r&d", "SVP, R&D"),
        ("director of saas ux/ui", "Director of SaaS UX/UI"),
        ("editor-in-chief", "Editor-in-Chief"),
        ("the boss", "The Boss"),
        ("senior ml engineer (ai)", "Senior ML Engineer (AI)"),
        ("iOS developer", "iOS Developer"),
        ("software engineer iii", "Software Engineer III"),
        ("  chief   executive officer ", "Chief Executive Officer"),
        ("", None),
        (None, None),
    ],
)
def test_title(value: str | None, title: str | None) -> None:
    assert one(standardize_title, value) == title


def test_title_own_acronyms() -> None:
    result = standardize_title(pa.array(["vp of devrel", "ceo"]), acronyms=["DevRel", "VP"])
    assert result.to_pylist() == ["VP of DevRel", "Ceo"]
    assert "CISO" in DEFAULT_ACRONYMS


# -- industry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "industry"),
    [
        ("Technology", "Technology"),
        ("technology", "Technology"),
        ("REAL ESTATE", "Real Estate"),
        ("real-estate", "Real Estate"),
        ("tech", "Technology"),
        ("Software", "Technology"),
        ("SaaS", "Technology"),
        ("IT", "Technology"),
        ("information  technology", "Technology"),
        ("banking", "Finance"),
        ("Fintech", "Finance"),
        ("financial services", "Finance"),
        ("health care", "Healthcare"),
        ("Pharma", "Healthcare"),
        ("hospital", "Healthcare"),
        ("Oil & Gas", "Energy"),
        ("non-profit", "Nonprofit"),
        ("other", "Other"),
        ("basket weaving", "Other"),
        ("42", "Other"),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_industry(value: str | None, industry: str | None) -> None:
    assert one(standardize_industry, value) == industry


def test_industry_tables() -> None:
    assert set(DEFAULT_INDUSTRY_SYNONYMS.values()) <= set(INDUSTRIES)
    assert all(key == key.lower() for key in DEFAULT_INDUSTRY_SYNONYMS)
    own = standardize_industry(
        pa.array(["crypto", "Finance", "farming"]), {"crypto": "Finance"}, ["Finance", "Other"]
    )
    assert own.to_pylist() == ["Finance", "Finance", "Other"]
    with pytest.raises(ValueError, match="Crypto"):
        standardize_industry(pa.array(["x"]), {"crypto": "Crypto"})


# -- text and every input shape ----------------------------------------------------------------


def test_text() -> None:
    values = pa.array(["  Trade   Show ", "Web", "", " \t ", None, "a\u3000\u2028b"])
    assert standardize_text(values).to_pylist() == ["Trade Show", "Web", None, None, None, "a b"]


RULES: list[Callable[[Any], pa.Array]] = [
    standardize_name,
    standardize_company,
    standardize_title,
    standardize_industry,
    standardize_text,
    lambda values: standardize_email(values)[0],
]


@pytest.mark.parametrize("rule", RULES)
def test_non_string_values(rule: Callable[[Any], pa.Array]) -> None:
    assert rule(pa.array([7, None], pa.int64())).to_pylist()[1] is None
    if rule is not standardize_industry:
        assert rule(pa.array([None, 5.0, 2.5, float("nan")])).to_pylist()[0::3] == [None, None]


def test_non_string_values_as_their_text() -> None:
    assert standardize_text(pa.array([5.0, 2.5, None, float("nan"), 1e20])).to_pylist() == [
        "5",
        "2.5",
        None,
        None,
        "1e+20",  # past 2**53, as array_text writes it
    ]
    assert standardize_text(pa.array([True, False, None])).to_pylist() == ["true", "false", None]
    assert standardize_text(pa.array([12, -3], pa.int8())).to_pylist() == ["12", "-3"]
    assert standardize_text(pa.array([dt.date(2024, 1, 2)])).to_pylist() == ["2024-01-02"]
    assert standardize_text(pa.nulls(2)).to_pylist() == [None, None]
    assert standardize_name(pa.array([None, None], pa.null())).to_pylist() == [None, None]
    assert standardize_industry(pa.array([1, None])).to_pylist() == ["Other", None]


def test_floats_as_value_text() -> None:
    rng = random.Random(53)
    floats = [5.0, -0.0, 2.5, 0.1, float("inf"), 1e20, 2.0**53, 2.0**53 + 2, -(2.0**53), 1e-300]
    floats += [rng.uniform(-1e17, 1e17) for _ in range(200)]
    floats += [float(rng.randint(-(2**53), 2**53)) for _ in range(200)]
    expected = [value_text(number) for number in floats]
    assert standardize_text(pa.array(floats, pa.float64())).to_pylist() == expected


@pytest.mark.parametrize("rule", RULES)
def test_array_shapes(rule: Callable[[Any], pa.Array]) -> None:
    values = ["  jane DOE ", None, "acme inc", "", "jane DOE"]
    expected = rule(pa.array(values)).to_pylist()
    assert len(expected) == len(values) and expected[1] is None and expected[3] is None
    shapes = [
        pa.array(values, pa.large_string()),
        pa.array(values).dictionary_encode(),
        pa.chunked_array([values[:2], [], values[2:]]),
        pa.chunked_array(
            [pa.array(values[:3]).dictionary_encode(), pa.array(values[3:]).dictionary_encode()]
        ),
    ]
    for shape in shapes:
        result = rule(shape)
        assert isinstance(result, pa.Array) and result.type == pa.string()
        assert result.to_pylist() == expected
    assert rule(pa.array([], pa.string())).to_pylist() == []


def test_duplicates_share_one_result() -> None:
    values = pa.array(["mary ann", "MARY ANN", "mary  ann", None] * 1000)
    result = standardize_name(values)
    assert result.to_pylist() == ["Mary Ann", "Mary Ann", "Mary Ann", None] * 1000
