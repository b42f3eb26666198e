"""The leads the benchmark processes: a CSV as a CRM exports it, N records over 0.8·N people,
deterministic (seeded), with the counts a run must reproduce.

Columns: ``Full Name,E-mail,Phone Number,Company Name,Job Title,Industry,Lead Source``. Record
0 introduces person 0; after it, each record is a person's first record or (20% of them) a
duplicate of a person already seen, uniformly among them. A person's e-mail is unique
(``first.last<n>@<company>.com`` and other shapes, ``<n>`` the person's number); every other
field has a canonical value per person, written each time in one of its spellings:

- e-mail: as is, upper/mixed case, or with spaces around it (the same lead once trimmed and
  lower-cased);
- name: ``John Smith``, ``john smith``, ``JOHN SMITH``, doubled spaces;
- phone: North American ``(415) 555-0142``, ``415.555.0142``, ``+1 415 555 0142``,
  ``4155550142``, ``415-555-0142``, or blank; ~3% of people international (``+44 20 7946
  0958``, ``+49 30 9018 2240``, ``+33 1 42 68 53 00``, ``+61 2 9374 4000``);
- company: a name with its legal form spelled ``Inc``, ``Inc.``, ``, Inc.``, ``INCORPORATED``
  (and LLC, Ltd, Corp forms), any case;
- title (``vp of sales``, ``VP Sales``, ``CEO``, ``chief executive officer``...), industry
  (``tech``, ``Technology``, ``banking``, ``Oil & Gas``...; a few unknown, read as ``Other``),
  lead source; a duplicate leaves a field blank 10% of the time.

About 1% of the records (``INVALID_FRACTION``, never a person's first record) carry a broken
e-mail (no ``@``, ``(at)``, two dots, a one-letter top-level domain, blank...): rejected. So a
``leads`` run must count: records in = N, rejected = ``invalid``, leads inserted = ``people``
(every person's first record is valid), merged in batch = N - invalid - people.

``ensure_leads`` keeps the file in a folder with a JSON sidecar (written last) of its counts.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
DUPLICATE_FRACTION = 0.2
INVALID_FRACTION = 0.01
INTERNATIONAL_FRACTION = 0.03
BLANK_IN_DUPLICATE = 0.1
HEADER = ("Full Name", "E-mail", "Phone Number", "Company Name", "Job Title", "Industry",
          "Lead Source")  # fmt: skip


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    """
    James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara
    Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy
    Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily
    Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Dorothy George Melissa
    Timothy Deborah Ronald Stephanie Jason Rebecca Edward Sharon Jeffrey Laura Ryan Cynthia
    Jacob Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry
    Pamela Justin Emma Scott Nicole Brandon Helen Benjamin Samantha Samuel Katherine Raymond
    Christine Gregory Debra Frank Rachel Alexander Carolyn Patrick Janet Jack Maria Dennis
    Olivia Priya Wei Mohammed Sofia Lukas Chloe Hiroshi Aisha Mateo Ingrid
    """
)
LAST = _words(
    """
    Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez
    Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson
    White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott
    Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter
    Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart
    Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed
    Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray
    Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez
    Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Fisher
    Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin
    Wallace Schmidt Mueller Dubois Rossi Tanaka Chen Singh Okafor Kowalski Larsen
    """
)
COMPANY_A = _words(
    """
    Acme Globex Initech Umbrella Stark Wayne Wonka Hooli Vandelay Soylent Cyberdyne Tyrell
    Massive Oscorp Aperture Gringotts Prestige Monarch Sterling Pied Blue Green North Summit
    Pioneer Atlas Vertex Horizon Nimbus Quantum Silver Iron Bright Clear Harbor Pacific
    Liberty Apex Evergreen
    """
)
COMPANY_B = _words(
    """
    Systems Industries Labs Group Partners Solutions Technologies Holdings Logistics Capital
    Dynamics Networks Foods Health Media Energy Analytics Consulting Ventures Works Bank
    Realty Motors Pharma Retail
    """
)
# A legal form and its spellings (the first one canonical).
SUFFIXES = (
    ("", ("",)),
    ("Inc.", (" Inc", " Inc.", ", Inc.", " INCORPORATED", " inc", " Incorporated")),
    ("LLC", (" LLC", " L.L.C.", " llc", ", LLC")),
    ("Ltd.", (" Ltd", " Ltd.", " Limited", " LTD")),
    ("Corp.", (" Corp", " Corp.", " Corporation", " CORP")),
)
TITLES = (
    ("vp of sales", "VP of Sales", "VP OF SALES", "Vp Of Sales"),
    ("CEO", "ceo", "Chief Executive Officer", "chief executive officer"),
    ("CTO", "cto", "Chief Technology Officer"),
    ("CFO", "cfo", "Chief Financial Officer"),
    ("sr. software engineer", "Sr. Software Engineer", "senior software engineer"),
    ("head of marketing", "Head of Marketing", "HEAD OF MARKETING"),
    ("account executive", "Account Executive", "AE"),
    ("sdr", "SDR", "Sales Development Rep"),
    ("hr director", "HR Director", "Director of HR"),
    ("it manager", "IT Manager", "IT MANAGER"),
    ("marketing manager", "Marketing Manager"),
    ("evp operations", "EVP Operations", "EVP, Operations"),
    ("product manager", "Product Manager", "product mgr"),
    ("Founder", "founder", "Co-Founder & CEO"),
)
INDUSTRIES = (
    ("Technology", "tech", "software", "SaaS", "IT", "Information Technology"),
    ("Finance", "banking", "financial services", "fintech", "Bank"),
    ("Healthcare", "healthcare", "Health Care", "pharma", "medical", "biotech"),
    ("Retail", "retail", "e-commerce", "ecommerce", "Consumer Goods"),
    ("Real Estate", "real-estate", "property", "REAL ESTATE"),
    ("Energy", "Oil & Gas", "energy", "utilities", "oil_and_gas"),
    ("Manufacturing", "manufacturing", "industrial", "automotive"),
    ("Education", "education", "edtech", "higher-education"),
    ("Transportation", "logistics", "Transport", "shipping"),
    ("Other", "Widgets", "misc", "Space Exploration"),
)
SOURCES = ("Web Form", "Trade Show", "Referral", "LinkedIn", "Cold Call", "Webinar", "Partner",
           "web form", "")  # fmt: skip
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com")
AREA_CODES = (201, 212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713, 718, 801, 917)
INTERNATIONAL = ("+44 20 {a:04d} {b:04d}", "+49 30 {a:04d} {b:04d}",
                 "+33 1 {a2:02d} {a3:02d} {b2:02d} {b3:02d}", "+61 2 {a:04d} {b:04d}")  # fmt: skip
US_PHONES = ("({p}) {e}-{n}", "{p}.{e}.{n}", "+1 {p} {e} {n}", "{p}{e}{n}", "{p}-{e}-{n}", "")
BROKEN_EMAILS = ("{l}(at){d}", "{l}{d}", "{l}@@{d}", "{l}..x@{d}", "{l}@{c}", "{l}@{d}.c",
                 "{l} at {d}", "", "n/a", "mailto {l}@{d}")  # fmt: skip


@dataclass(frozen=True)
class Leads:
    """A generated file: its path, records, people (the distinct valid e-mails), invalid
    records (to be rejected), bytes and the seconds it took to write (None: cached)."""

    path: str
    records: int
    people: int
    invalid: int
    bytes: int
    seed: int
    seconds: float | None = None

    @property
    def merged(self) -> int:
        """The valid records merged into an earlier one of their e-mail."""
        return self.records - self.invalid - self.people


def _plan(records: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """(per record its person, per record whether its e-mail is broken, people)."""
    people = max(1, round(records * (1 - DUPLICATE_FRACTION)))
    repeats = records - people
    first = np.ones(records, dtype=bool)
    if repeats:
        at = rng.choice(np.arange(1, records), size=repeats, replace=False)
        first[at] = False
    seen = np.cumsum(first)  # people introduced up to and including each record
    person = np.where(first, seen - 1, (rng.random(records) * seen).astype(np.int64))
    invalid = np.zeros(records, dtype=bool)
    broken = min(repeats, round(records * INVALID_FRACTION))
    if broken:
        invalid[rng.choice(np.flatnonzero(~first), size=broken, replace=False)] = True
    return person, invalid, people


def _people(people: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Per person: first, last, e-mail local part, domain, company slug, company base, legal
    form, phone digits or international phone, title, industry (indices as text)."""
    f = rng.integers(0, len(FIRST), people)
    last = rng.integers(0, len(LAST), people)
    ca, cb = rng.integers(0, len(COMPANY_A), people), rng.integers(0, len(COMPANY_B), people)
    form = rng.integers(0, len(SUFFIXES), people)
    shape = rng.integers(0, 4, people)
    free = rng.random(people) < 0.3
    mail = rng.integers(0, len(FREE_MAIL), people)
    area = rng.integers(0, len(AREA_CODES), people)
    exchange, line = rng.integers(200, 1000, people), rng.integers(0, 10_000, people)
    abroad = rng.random(people) < INTERNATIONAL_FRACTION
    country = rng.integers(0, len(INTERNATIONAL), people)
    title, industry = rng.integers(0, len(TITLES), people), rng.integers(0, len(INDUSTRIES), people)
    out: list[tuple[str, ...]] = []
    for i in range(people):
        first, family = FIRST[f[i]], LAST[last[i]]
        company = f"{COMPANY_A[ca[i]]} {COMPANY_B[cb[i]]}"
        slug = company.lower().replace(" ", "")
        fl, ll = first.lower(), family.lower()
        local = (f"{fl}.{ll}", f"{fl[0]}{ll}", f"{fl}_{ll}", f"{fl}{ll[0]}")[shape[i]] + str(i)
        domain = FREE_MAIL[mail[i]] if free[i] else f"{slug}.com"
        if abroad[i]:
            a, b = int(exchange[i]) * 10 + int(line[i]) % 10, int(line[i])
            phone = INTERNATIONAL[country[i]].format(
                a=a, b=b, a2=a // 100 % 100, a3=a % 100, b2=b // 100, b3=b % 100
            )
        else:
            phone = f"{AREA_CODES[area[i]]}|{exchange[i]}|{line[i]:04d}"
        out.append((first, family, local, domain, slug, company, str(form[i]), phone,
                    str(title[i]), str(industry[i])))  # fmt: skip
    return out


def _record(p: tuple[str, ...], r: np.ndarray, duplicate: bool, broken: bool) -> list[str]:
    """One record of person ``p`` in the spellings the random integers ``r`` pick."""
    first, family, local, domain, slug, company, form, phone, title, industry = p
    email = f"{local}@{domain}"
    email = (email, email.upper(), f"  {email} ", f"{local.capitalize()}@{domain.capitalize()}",
             email, email)[r[0] % 6]  # fmt: skip
    if broken:
        email = BROKEN_EMAILS[r[0] % len(BROKEN_EMAILS)].format(l=local, d=domain, c=slug)
    name = f"{first} {family}"
    name = (name, name.lower(), name.upper(), f"{first}  {family}", name)[r[1] % 5]
    if "|" in phone:
        area, exchange, line = phone.split("|")
        phone = US_PHONES[r[2] % len(US_PHONES)].format(p=area, e=exchange, n=line)
    suffix = SUFFIXES[int(form)][1]
    firm = company + suffix[r[3] % len(suffix)]
    firm = (firm, firm.lower(), firm.upper(), firm, firm)[r[4] % 5]
    titles, industries = TITLES[int(title)], INDUSTRIES[int(industry)]
    row = [name, email, phone, firm, titles[r[5] % len(titles)],
           industries[r[6] % len(industries)], SOURCES[r[7] % len(SOURCES)]]  # fmt: skip
    if duplicate:  # a later record: a field left blank now and then (never the e-mail)
        for field in (0, 2, 3, 4, 5, 6):
            if r[8 + field] % 100 < BLANK_IN_DUPLICATE * 100:
                row[field] = ""
    return row


def write_leads(path: str, records: int, seed: int) -> Leads:
    """Write ``records`` leads to ``path`` (its folder made); return what it holds."""
    started = time.perf_counter()
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    person, invalid, people = _plan(records, rng)
    persons = _people(people, rng)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    seen = np.zeros(people, dtype=bool)
    block = 100_000
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for start in range(0, records, block):
            stop = min(records, start + block)
            draws = rng.integers(0, 1 << 30, (stop - start, 16))
            rows = []
            for i in range(start, stop):
                who = int(person[i])
                rows.append(_record(persons[who], draws[i - start], bool(seen[who]), invalid[i]))
                seen[who] = True
            writer.writerows(rows)
    return Leads(path, records, people, int(invalid.sum()), os.path.getsize(path), seed,
                 time.perf_counter() - started)  # fmt: skip


def ensure_leads(folder: str, records: int, seed: int) -> Leads:
    """The file of ``records`` leads of ``seed`` in ``folder``, written unless its sidecar says
    it is there already."""
    path = os.path.join(folder, f"leads-{records}-seed{seed}-v{GENERATOR_VERSION}.csv")
    sidecar = path + ".json"
    if os.path.exists(path) and os.path.exists(sidecar):
        known = json.loads(Path(sidecar).read_text())
        if known.get("bytes") == os.path.getsize(path):
            return Leads(**(known | {"path": path, "seconds": None}))
    made = write_leads(path, records, seed)
    Path(sidecar).write_text(json.dumps(asdict(made)))
    return made
