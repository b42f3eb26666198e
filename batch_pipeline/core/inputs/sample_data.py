"""Realistic sample input for the demo and the benchmarks, generated with numpy (no loops).

Leads like the seed CRM pipeline's: ids, users, ISO timestamps, names, e-mails, phones,
companies, amounts, and free-text notes, some of which hold commas, doubled quotes and line
breaks inside quoted fields. About ``invalid_fraction`` of the records break the demo schema
(bad e-mail, missing e-mail, negative or non-numeric amount, unparseable timestamp). numpy and
pyarrow are imported when data is made: the CLI's parser reads ``INVALID_FRACTION`` from here.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

INVALID_FRACTION = 0.03  # records made invalid when not told otherwise

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Tim",
    "Frances",
    "John",
    "Hedy",
    "Edsger",
    "Katherine",
    "Guido",
    "Sophie",
    "Niklaus",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Berners-Lee",
    "Allen",
    "McCarthy",
    "Lamarr",
    "Dijkstra",
    "Johnson",
    "Rossum",
]
COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Wonka, Inc.",
    "Cyberdyne",
    "Soylent",
]
TITLES = ["CTO", "VP Engineering", "Data Engineer", "Analyst", "Founder", "Buyer"]
INDUSTRIES = ["software", "retail", "finance", "health", "energy", "logistics"]
SOURCES = ["web", "referral", "event", "partner", "cold-call"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net"]
NOTES = [
    "",
    "",
    "",
    "call back next week",
    'said "maybe", follow up',
    "prefers e-mail, not phone",
    "met at the fair\nwants a demo",
    "budget: 10k, Q3",
]

DEMO_SCHEMA = {
    "columns": {
        "lead_id": {"type": "int64", "required": True, "min": 1},
        "user_id": {"type": "int64", "required": True},
        "created_at": {"type": "timestamp", "required": True},
        "name": {"type": "string", "required": True, "max_length": 200},
        "email": {"type": "string", "required": True, "pattern": r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"},
        "phone": {"type": "string", "pattern": r"^\+?[0-9][0-9 ().-]{6,}$"},
        "company": {"type": "string"},
        "industry": {"type": "string", "allowed": INDUSTRIES},
        "amount": {"type": "float64", "min": 0, "max": 1_000_000},
    },
    "extra_columns": "keep",
}


def generate_leads(
    records: int, invalid_fraction: float = INVALID_FRACTION, seed: int = 7
) -> pa.Table:
    """``records`` leads as an Arrow table of strings (as a CSV would hold them)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    idx = np.arange(1, records + 1)
    first = np.array(FIRST)[rng.integers(0, len(FIRST), records)]
    last = np.array(LAST)[rng.integers(0, len(LAST), records)]
    name = np.char.add(np.char.add(first, " "), last)
    local = np.char.lower(np.char.add(np.char.add(first, "."), last))
    domain = np.array(DOMAINS)[rng.integers(0, len(DOMAINS), records)]
    email = np.char.add(np.char.add(np.char.add(local, idx.astype(str)), "@"), domain)
    seconds = rng.integers(1_700_000_000, 1_760_000_000, records).astype("datetime64[s]")
    created = np.char.add(np.datetime_as_string(seconds, unit="s"), "Z")
    phone = np.char.add("+1-555-", rng.integers(1_000_000, 9_999_999, records).astype(str))
    amount = np.round(rng.gamma(2.0, 900.0, records), 2).astype(str)
    columns = {
        "lead_id": idx.astype(str),
        "user_id": rng.integers(1, max(records // 20, 2), records).astype(str),
        "created_at": created,
        "name": name,
        "email": email,
        "phone": phone,
        "company": np.array(COMPANIES)[rng.integers(0, len(COMPANIES), records)],
        "title": np.array(TITLES)[rng.integers(0, len(TITLES), records)],
        "industry": np.array(INDUSTRIES)[rng.integers(0, len(INDUSTRIES), records)],
        "source": np.array(SOURCES)[rng.integers(0, len(SOURCES), records)],
        "amount": amount,
        "notes": np.array(NOTES)[rng.integers(0, len(NOTES), records)],
    }
    bad = np.flatnonzero(rng.random(records) < invalid_fraction)
    kinds = rng.integers(0, 5, bad.size)
    columns = {k: v.astype(object) for k, v in columns.items()}
    columns["email"][bad[kinds == 0]] = [
        e.replace("@", "") for e in columns["email"][bad[kinds == 0]]
    ]
    columns["email"][bad[kinds == 1]] = ""
    columns["amount"][bad[kinds == 2]] = "-12.5"
    columns["amount"][bad[kinds == 3]] = "n/a"
    columns["created_at"][bad[kinds == 4]] = "yesterday"
    return pa.table({k: pa.array(v.tolist(), type=pa.string()) for k, v in columns.items()})


def write_sample(
    directory: str, records: int, invalid_fraction: float = INVALID_FRACTION
) -> tuple[str, str]:
    """Write ``leads.csv`` and the matching ``leads_schema.json`` (validate options) into
    ``directory``; returns both paths."""
    import pyarrow.csv as pacsv

    os.makedirs(directory, exist_ok=True)
    csv_path = os.path.join(directory, "leads.csv")
    schema_path = os.path.join(directory, "leads_schema.json")
    table = generate_leads(records, invalid_fraction)
    pacsv.write_csv(table, csv_path, pacsv.WriteOptions(quoting_style="needed"))
    with open(schema_path, "w") as f:
        json.dump(DEMO_SCHEMA, f, indent=1)
    return csv_path, schema_path
