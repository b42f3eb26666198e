"""The ``leads`` processor on its own: stage 1 (``prepare``: fields from leniently matched
columns, standardized, bad e-mails rejected with reasons, the other columns kept) and stage 2
(``process_bucket``: records of an e-mail merged in input order, then with the stored lead,
never blanked, with exact counts and each record's ``lead_action``), and the LLM standardizer
through ``prepare`` against the fake OpenAI-compatible server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedContext
from batch_pipeline.core.processing.processors.leads.processor import FILE, Leads
from batch_pipeline.core.stores.leads import iso_time
from batch_pipeline_tests.fake_llm import Behaviour, FakeLlm

CONTEXT = KeyedContext("b2", "s3://bucket/in/leads-2026.csv", batch_time=1_767_225_600.0)
NOW = iso_time(1_767_225_600.0)


def leads(options: dict[str, Any] | None = None) -> Leads:
    processor = get_processor("leads", options or {})
    assert isinstance(processor, Leads)
    return processor


def prepared(table: pa.Table, options: dict[str, Any] | None = None) -> Any:
    return leads(options).prepare(table, CONTEXT)


def test_fields_come_from_matched_columns_and_bad_emails_are_rejected_with_reasons() -> None:
    table = pa.table({
        "Full Name": ["john mcdonald", "MARY O'NEIL", "x", None],
        "E-mail": [" John@Example.COM ", None, "nope", None],
        "Email Address": [None, "Mary@Corp.IO", "ignored@x.io", None],  # a second sheet's
        "Mobile": [5551234567.0, None, None, None],  # an Excel number
        "Company Name": ["acme inc", "Globex, L.L.C.", None, None],
        "Notes": ["met at fair", None, "n", "m"],
        "_worksheet": ["East", "West", "West", "East"],
    })  # fmt: skip
    result = prepared(table)
    assert result.rejected.tolist() == [2, 3]
    assert result.reasons.to_pylist() == [
        "email: not an e-mail address (got 'nope')",
        "email: missing",
    ]
    valid = result.valid
    assert valid.column_names == ["email", "name", "phone", "company", "title", "industry",
                                  "source", FILE, "Notes", "_worksheet"]  # fmt: skip
    assert valid.column("email").to_pylist() == ["john@example.com", "mary@corp.io"]
    assert valid.column("name").to_pylist() == ["John McDonald", "Mary O'Neil"]
    assert valid.column("phone").to_pylist() == ["+15551234567", None]  # none: null till stage 2
    assert valid.column("company").to_pylist() == ["Acme Inc.", "Globex LLC"]
    assert valid.column("source").to_pylist() == [None, None]  # no source column
    assert valid.column(FILE).to_pylist() == ["leads-2026.csv"] * 2
    assert valid.column("Notes").to_pylist() == ["met at fair", None]  # as it came
    assert valid.column("_worksheet").to_pylist() == ["East", "West"]


def test_a_source_column_wins_over_the_file_name_and_other_columns_can_be_dropped() -> None:
    table = pa.table({"email": ["a@x.io", "b@x.io"], "Lead Source": ["Web", "  "],
                      "Notes": ["n1", "n2"]})  # fmt: skip
    valid = prepared(table, {"keep_other_columns": False}).valid
    assert valid.column("source").to_pylist() == ["Web", None]
    assert valid.column(FILE).to_pylist() == [None, "leads-2026.csv"]
    assert "Notes" not in valid.column_names


def test_the_columns_taken_are_said_and_a_file_without_an_email_column_is_refused() -> None:
    processor = leads()
    [said] = processor.column_warnings(["Name", "E-Mail", "Phone Number", "Fax"])
    assert said == (
        "leads: name from 'Name'; email from 'E-Mail'; phone from 'Phone Number'; no column "
        "for company, title, industry (left empty)"
    )
    [problem] = processor.check_columns(["Name", "Phone"])
    assert problem.startswith("no e-mail column among Name, Phone (accepted names: ")
    assert processor.check_columns(["email", "lead_action"]) == [
        "column 'lead_action' is in the source, and leads writes its own"
    ]
    custom = leads({"aliases": {"email": ["Courriel"]}})
    assert custom.check_columns(["Courriel"]) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"default_region": "XX"}, "default_region: Value error, 'XX' is not a region"),
        ({"standardizer": "llm"}, "standardizer 'llm' needs llm: {base_url, model}"),
        ({"industry_synonyms": {"biotech": "Biotech"}}, "maps to 'Biotech', not an industry"),
        ({"aliases": {"mail": ["x"]}}, "no field 'mail'"),
        ({"colour": 1}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_one_readable_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        get_processor("leads", options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def bucket(rows: list[dict[str, Any]]) -> pa.Table:
    """Stage 2's input: records as stage 1 writes them."""
    fields = ("email", "name", "phone", "company", "title", "industry", "source", FILE)
    return pa.table({f: pa.array([r.get(f) for r in rows], pa.string()) for f in fields})


def stored(**fields: Any) -> dict[str, Any]:
    base = {"name": None, "phone": "N/A", "company": None, "title": None, "industry": None,
            "source": "old.csv", "first_batch": "b1", "created_at": iso_time(1.0),
            "updated_at": iso_time(1.0)}  # fmt: skip
    return {**base, **fields}


def test_records_of_an_email_merge_in_input_order_and_update_the_stored_lead() -> None:
    table = bucket([
        {"email": "a@x.io", "name": "Ann", "phone": "+15550000001", FILE: "f.csv"},
        {"email": "b@x.io", "name": "Bo", "title": "CEO", "source": "Web"},
        {"email": "a@x.io", "name": "Ann Lee", "company": "Acme Inc.", FILE: "f.csv"},
        {"email": "c@x.io", "name": "Cy", "title": "CTO", FILE: "f.csv"},
        {"email": "a@x.io", "phone": None, "title": "VP", FILE: "f.csv"},
        {"email": "d@x.io", "name": "Di", FILE: "g.csv"},
    ])  # fmt: skip
    states = {
        "b@x.io": stored(name="Bo", title="CEO", source="Web"),  # nothing new: unchanged
        "c@x.io": stored(name="Cy", phone="+15550000003", title="CFO"),  # title changes
    }
    result = leads().process_bucket(table, states, CONTEXT)
    assert result.counts == {"leads_inserted": 2, "leads_updated": 1, "leads_unchanged": 1,
                             "leads_merged_in_batch": 2}  # fmt: skip
    assert result.rejected.size == 0
    valid = result.valid.to_pylist()
    assert [(r["email"], r["lead_action"]) for r in valid] == [
        ("a@x.io", "merged"), ("a@x.io", "merged"), ("a@x.io", "inserted"),
        ("b@x.io", "unchanged"), ("c@x.io", "updated"), ("d@x.io", "inserted"),
    ]  # fmt: skip
    assert [r["phone"] for r in valid[:3]] == ["+15550000001", "N/A", "N/A"]  # each as it came
    assert valid[0]["source"] == "f.csv" and FILE not in valid[0]
    assert set(result.states) == {"a@x.io", "c@x.io", "d@x.io"}  # changed leads only
    assert result.states["a@x.io"] == {
        "name": "Ann Lee", "phone": "+15550000001", "company": "Acme Inc.", "title": "VP",
        "industry": None, "source": "f.csv", "first_batch": "b2", "created_at": NOW,
        "updated_at": NOW,
    }  # fmt: skip
    assert result.states["c@x.io"] == {**states["c@x.io"], "title": "CTO", "updated_at": NOW}
    assert result.states["d@x.io"]["source"] == "g.csv"


def test_an_empty_value_never_blanks_a_stored_one_and_n_a_is_empty() -> None:
    table = bucket([{"email": "a@x.io", "name": None, "phone": None, FILE: "new.csv"}])
    states = {"a@x.io": stored(name="Ann", phone="+15550000001", source="Trade show")}
    result = leads().process_bucket(table, states, CONTEXT)
    assert result.counts["leads_unchanged"] == 1 and result.states == {}
    assert result.valid.column("source").to_pylist() == ["new.csv"]  # the record's own
    # A stored N/A takes a phone from the batch.
    table = bucket([{"email": "a@x.io", "phone": "+15550000009"}])
    result = leads().process_bucket(table, {"a@x.io": stored(name="Ann")}, CONTEXT)
    assert result.counts["leads_updated"] == 1
    assert result.states["a@x.io"]["phone"] == "+15550000009"


def test_the_llm_rewrites_what_it_answers_well_and_the_rules_do_the_rest() -> None:
    table = pa.table({
        "name": ["ann lee", "bo ray", "cy", "dee"],
        "email": ["Ann@X.io", "bo@x.io", "cy@x.io", "not-an-email"],
        "phone": ["555 123 4567", "(555) 987-6543", None, None],
        "company": ["acme inc", "zeta llc", None, None],
        "industry": ["software", None, "banking", None],
    })  # fmt: skip
    with FakeLlm() as fake:
        fake.script(Behaviour("changed_email", index=1))  # bo's answer changes his e-mail
        options = {"standardizer": "llm", "llm": {
            "base_url": fake.url, "model": "m", "api_key_env": "LEADS_KEY",
            "records_per_call": 3, "max_concurrent_calls": 1, "backoff_seconds": 0.01,
        }}  # fmt: skip
        context = KeyedContext("b1", "leads.csv", secrets={"LEADS_KEY": "sk-secret"})
        result = leads(options).prepare(table, context)
        assert fake.authorizations and set(fake.authorizations) == {"Bearer sk-secret"}
        sent = [lead["email"] for body in fake.bodies for lead in leads_sent(body)]
    assert sorted(sent) == ["Ann@X.io", "bo@x.io", "cy@x.io"]  # never a rejected record
    assert result.rejected.tolist() == [3]
    assert result.counts["llm_calls"] == 1 and result.counts["llm_fallbacks"] == 1
    valid = result.valid.to_pylist()
    assert valid[0]["company"] == "Acme Inc."  # the model's (as is), with our suffixes
    assert valid[1]["company"] == "Zeta LLC"  # fell back: the rules'
    assert [r["phone"] for r in valid] == ["+15551234567", "+15559876543", None]
    assert [r["industry"] for r in valid] == ["Technology", None, "Finance"]  # mapped
    assert [r["email"] for r in valid] == ["ann@x.io", "bo@x.io", "cy@x.io"]


def leads_sent(body: dict[str, Any]) -> list[dict[str, Any]]:
    import json
    import re

    content = body["messages"][-1]["content"]
    found = re.search(r"(\[.*\]|\{.*\})", content, re.S)
    assert found, content
    parsed = json.loads(found.group(1))
    return parsed["leads"] if isinstance(parsed, dict) else parsed


def test_null_keys_in_a_bucket_are_rejected_not_lost() -> None:
    table = bucket([{"email": None, "name": "x"}, {"email": "a@x.io", "name": "A"}])
    result = leads().process_bucket(table, {}, CONTEXT)
    assert result.rejected.tolist() == [0] and result.reasons.to_pylist() == ["email: missing"]
    assert result.valid.num_rows == 1 and np.array_equal(result.rejected, [0])
