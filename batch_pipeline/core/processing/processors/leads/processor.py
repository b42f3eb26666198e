"""``leads``: standardize leads, de-duplicate them by e-mail, upsert them into the lead store.

Options (JSON or YAML shape; every one has a default)::

    {"default_region": "US", "standardizer": "rules",
     "aliases": {"email": ["Courriel"]}, "company_suffixes": {"sarl": "SARL"},
     "acronyms": ["GM"], "industries": [...], "industry_synonyms": {"biotech": "Healthcare"},
     "keep_other_columns": true,
     "llm": {"base_url": "http://127.0.0.1:8080/v1", "model": "deepseek-chat"}}

Stage 1 (``prepare``, each chunk): the fields are taken from the columns ``rules.match_columns``
finds (a field whose columns are several, as two worksheets spelled differently, takes the first
non-blank of them per record) and standardized by ``rules``, or by the LLM (``standardizer:
llm``, ``llm.LlmStandardizer``: the records it does not answer well fall back to the rules, its
phones and industries go through the rules' too, so the store stays uniform, and a value it
gives for a field the record left empty is ignored, as is an empty answer for one the record
has: it rewrites, never invents nor erases). A record without an e-mail, or with one that is not
an address, is rejected with the reason. The kept records are ``email`` (trimmed, lower-cased:
the key), ``name``, ``phone`` (E.164, null when none), ``company``, ``title``, ``industry``,
``source`` (from a column, else the file's name), then ``_worksheet`` and ``_file`` when there,
then the source's other columns as they came (``keep_other_columns``); the columns the fields
came from are replaced by them.

Stage 2 (``process_bucket``, each bucket of e-mails): the records of one e-mail merge in input
order, field by field, a later non-empty value replacing an earlier one; the merged values then
update the stored lead the same way (an empty value never blanks one; a phone ``N/A`` is an
empty one). A lead the store lacks is inserted (``leads_inserted``), one whose fields change is
updated (``leads_updated``), else it is ``leads_unchanged``; ``leads_merged_in_batch`` counts
the records merged into an earlier one of their e-mail. The valid records are every kept record
standardized (records in = out + rejected), each e-mail's together, in input order, a missing
phone written ``N/A``, plus ``lead_action``: the e-mail's ``inserted``, ``updated`` or
``unchanged`` on its last record, ``merged`` on the earlier ones. A lead's state (the lead
store's row, ``core.stores.leads``) is its fields, ``first_batch``, ``created_at`` and
``updated_at``, the times the batch's own (``KeyedContext.batch_time``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors.base import (
    ADDED_COLUMNS,
    ProcessorOptions,
    ProcessResult,
    register,
)
from batch_pipeline.core.processing.processors.keyed import (
    KeyedContext,
    KeyedProcessor,
    KeyedResult,
    KeyState,
    key_order,
)
from batch_pipeline.core.processing.processors.leads import rules
from batch_pipeline.core.processing.processors.leads.llm import LlmSettings, LlmStandardizer
from batch_pipeline.core.stores.leads import LEAD_FIELDS, iso_time

NO_PHONE = "N/A"
ACTION = "lead_action"
FILE = "_source_file"  # between the stages only: the file a record without a source came from
FIELDS = rules.FIELDS  # name, email, phone, company, title, industry, source
LLM_FIELDS = ("name", "phone", "company", "title", "industry")  # what the LLM may rewrite
OUTPUT = ("email", *LEAD_FIELDS)  # the kept records' first columns, in this order


class LeadsOptions(ProcessorOptions):
    default_region: str = Field("US", min_length=2, max_length=3)
    standardizer: Literal["rules", "llm"] = "rules"
    llm: LlmSettings | None = None
    # Added to (or, for one entry, replacing) the defaults of ``rules``.
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    company_suffixes: dict[str, str] = Field(default_factory=dict)
    acronyms: list[str] = Field(default_factory=list)
    industry_synonyms: dict[str, str] = Field(default_factory=dict)
    # Replaces the fixed list when given.
    industries: list[str] | None = None
    keep_other_columns: bool = True

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (US, GB, DE...)")
        return region

    @field_validator("aliases")
    @classmethod
    def _fields(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"no field {unknown[0]!r}: the fields are {', '.join(FIELDS)}")
        return value

    @model_validator(mode="after")
    def _llm(self) -> LeadsOptions:
        if self.standardizer == "llm" and self.llm is None:
            raise ValueError("standardizer 'llm' needs llm: {base_url, model}")
        known = set(self.industries or rules.INDUSTRIES)
        wrong = sorted(v for v in self.industry_synonyms.values() if v not in known)
        if wrong:
            raise ValueError(f"industry_synonyms maps to {wrong[0]!r}, not an industry")
        return self


@register
class Leads(KeyedProcessor):
    """Standardizes leads, merges them by e-mail and upserts them into the lead store."""

    name = "leads"
    Options = LeadsOptions
    options: LeadsOptions
    store_kind = "leads"

    def key_column(self) -> str:
        return "email"

    def state_namespace(self) -> str:
        """``leads/email`` for every processor of this class (a subclass too): they share the
        store's one ``leads`` table, so they share its lease."""
        return "leads/email"

    def secret_names(self) -> tuple[str, ...]:
        llm = self.options.llm
        return (llm.api_key_env,) if self.options.standardizer == "llm" and llm else ()

    def _aliases(self) -> dict[str, list[str]]:
        aliases = {f: list(names) for f, names in rules.DEFAULT_ALIASES.items()}
        for field, names in self.options.aliases.items():
            aliases[field] = [*names, *aliases.get(field, [])]
        return aliases

    def columns_taken(self, columns: Sequence[str]) -> dict[str, list[str]]:
        """The source columns each field is taken from (``rules.match_columns``)."""
        names = [c for c in columns if c not in ADDED_COLUMNS]
        return {f: cs for f, cs in rules.match_columns(names, self._aliases()).items() if cs}

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        problems = []
        if not self.columns_taken(columns).get("email"):
            problems.append(
                f"no e-mail column among {', '.join(columns) or 'none'} (accepted names: "
                f"{', '.join(self._aliases()['email'][:6])}...; add one with the option "
                "aliases: {email: [...]})"
            )
        for name in (ACTION, FILE):
            if name in columns:
                problems.append(f"column {name!r} is in the source, and leads writes its own")
        return problems

    def column_warnings(self, columns: Sequence[str]) -> list[str]:
        taken = self.columns_taken(columns)
        said = "; ".join(
            f"{field} from {', '.join(repr(c) for c in taken[field])}"
            for field in FIELDS
            if field in taken
        )
        missing = [f for f in FIELDS if f not in taken and f != "source"]
        return [
            f"leads: {said}"
            + (f"; no column for {', '.join(missing)} (left empty)" if missing else "")
        ]

    # Stage 1 -------------------------------------------------------------------------------
    def prepare(self, table: pa.Table, context: KeyedContext) -> ProcessResult:
        taken = self.columns_taken(table.column_names)
        raw: dict[str, pa.Array] = {}
        untaken: dict[str, np.ndarray] = {}  # a column's values a record did not take
        for field in FIELDS:
            raw[field], beside = _first_present(table, taken.get(field, []))
            untaken.update(beside)
        emails, reasons = rules.standardize_email(raw["email"])
        bad = _np(pc.is_valid(reasons))
        values = self._standardize(raw)
        values["email"] = emails
        counts: dict[str, int] = {}
        if self.options.standardizer == "llm":
            counts = self._llm(raw, values, ~bad, context)
        kept = pa.array(np.flatnonzero(~bad))
        # The columns a field replaces: those whose every value a kept record took (a rejected
        # record keeps every column as it came, in the rejected file).
        used = set(OUTPUT) | {c for c, rows in untaken.items() if not np.any(rows & ~bad)}
        files = pc.if_else(pc.is_null(values["source"]), _file_names(table, context), None)
        out = pa.table({**{name: values[name] for name in OUTPUT}, FILE: files}).take(kept)
        for name in table.column_names:
            if name in ADDED_COLUMNS or (self.options.keep_other_columns and name not in used):
                out = out.append_column(name, table.column(name).take(kept))
        rejected = np.flatnonzero(bad)
        return ProcessResult(out, rejected, reasons.filter(pa.array(bad)), counts)

    def _standardize(self, raw: Mapping[str, pa.Array]) -> dict[str, pa.Array]:
        o = self.options
        phones = rules.standardize_phone(raw["phone"], o.default_region)
        return {
            "name": rules.standardize_name(raw["name"]),
            "phone": pc.if_else(pc.equal(phones, NO_PHONE), None, phones),
            "company": rules.standardize_company(
                raw["company"], {**rules.DEFAULT_COMPANY_SUFFIXES, **o.company_suffixes}
            ),
            "title": rules.standardize_title(raw["title"], (*rules.DEFAULT_ACRONYMS, *o.acronyms)),
            "industry": self._industry(raw["industry"]),
            "source": rules.standardize_text(raw["source"]),
        }

    def _industry(self, values: pa.Array) -> pa.Array:
        o = self.options
        synonyms = {**rules.DEFAULT_INDUSTRY_SYNONYMS, **o.industry_synonyms}
        industries = o.industries or rules.INDUSTRIES
        if o.industries:  # synonyms of industries not in the given list are left out
            synonyms = {k: v for k, v in synonyms.items() if v in industries}
        return rules.standardize_industry(values, synonyms, industries)

    def _llm(
        self,
        raw: Mapping[str, pa.Array],
        values: dict[str, pa.Array],
        usable: np.ndarray,
        context: KeyedContext,
    ) -> dict[str, int]:
        """The LLM's answers in the place of the rules' where it gave one (records with an
        e-mail only); the rules' phone and industry applied to its values."""
        settings = self.options.llm
        assert settings is not None
        rows = np.flatnonzero(usable)
        if not rows.size:
            return {}
        texts = {f: raw[f].take(pa.array(rows)).to_pylist() for f in FIELDS}
        records = [{f: texts[f][i] for f in FIELDS} for i in range(rows.size)]
        key = context.secrets.get(settings.api_key_env)
        answers, stats = LlmStandardizer(settings, key).standardize(records)
        answered = [(i, a) for i, a in enumerate(answers) if a is not None]
        if answered:
            at = rows[[i for i, _ in answered]]
            # The model may rewrite a value, never invent one for a field the record left empty.
            given = {
                f: pa.array(
                    [a[f] if (texts[f][i] or "").strip() else None for i, a in answered],
                    pa.string(),
                )
                for f in FIELDS
            }
            mine = self._standardize(given)
            for field in ("name", "title"):  # the model's casing; its company gets our suffixes
                mine[field] = rules.standardize_text(given[field])
            for field in LLM_FIELDS:  # nor erase one: an empty answer keeps the rules'
                ours = values[field].take(pa.array(at))
                values[field] = _put(values[field], at, pc.coalesce(mine[field], ours))
        return stats.as_counts()

    # Stage 2 -------------------------------------------------------------------------------
    def process_bucket(
        self, table: pa.Table, states: Mapping[str, KeyState], context: KeyedContext
    ) -> KeyedResult:
        if "email" not in table.column_names:
            raise ConfigError("the bucket's records have no email column: run the batch again")
        keys = table.column("email").combine_chunks().cast(pa.string())
        missing = np.flatnonzero(~_np(pc.is_valid(keys)))
        order = key_order(keys)
        order = order[: order.size - missing.size]  # null keys sort last
        work = table.take(pa.array(order))
        merged = _last_values(work)
        files = _last_files(work)
        now = iso_time(context.batch_time or 0.0)
        counts = dict.fromkeys(
            ("leads_inserted", "leads_updated", "leads_unchanged", "leads_merged_in_batch"), 0
        )
        new_states: dict[str, KeyState] = {}
        actions: dict[str, str] = {}
        for email, fields in merged.items():
            start = states.get(email)
            if start is None:
                lead = {**fields, "first_batch": context.batch_id, "created_at": now}
                action = "inserted"
            else:
                lead = _updated(start, fields, context.batch_id, now)
            if _empty(lead.get("source")) is None:  # no source column ever: its file's name
                lead["source"] = files.get(email)
            if start is not None:
                changed = any(_empty(lead[f]) != _empty(start.get(f)) for f in LEAD_FIELDS) or any(
                    lead.get(f) != start.get(f) for f in ("first_batch", "created_at")
                )
                action = "updated" if changed else "unchanged"
            counts[f"leads_{action}"] += 1
            actions[email] = action
            if action != "unchanged":
                lead["updated_at"] = max(now, str((start or {}).get("updated_at") or now))
                lead["phone"] = lead.get("phone") or NO_PHONE
                new_states[email] = lead
        counts["leads_merged_in_batch"] = work.num_rows - len(merged)
        valid = _with_actions(work, actions)
        return KeyedResult(
            valid,
            missing,
            pa.array(["email: missing"] * missing.size, pa.string()),
            new_states,
            counts,
        )


def _first_present(
    table: pa.Table, columns: Sequence[str]
) -> tuple[pa.Array, dict[str, np.ndarray]]:
    """Per record, the first of ``columns`` holding a value (``rules.field_text``: not blank,
    not a placeholder); and for each column, the records where it held a value they did not
    take (a mobile beside a phone): a column without any is one the field replaces, one with
    some keeps its place in the output, as it came."""
    n = table.num_rows
    if not columns:
        return pa.nulls(n, pa.string()), {}
    texts = [rules.field_text(table.column(name)) for name in columns]
    chosen = pc.coalesce(*texts) if len(texts) > 1 else texts[0]
    untaken = {columns[0]: np.zeros(n, dtype=bool)}
    taken_before = _np(pc.is_valid(texts[0]))
    for name, text in zip(columns[1:], texts[1:], strict=True):
        present = _np(pc.is_valid(text))
        untaken[name] = present & taken_before
        taken_before |= present
    return chosen, untaken


def _file_names(table: pa.Table, context: KeyedContext) -> pa.Array:
    """Each record's file name: a file set's ``_file``, else the batch's source's."""
    n = table.num_rows
    if "_file" in table.column_names:
        files = table.column("_file").combine_chunks().cast(pa.string())
        return pc.replace_substring_regex(files, r"^.*/", "")
    name = posixpath.basename(context.source_uri.rstrip("/")) or context.source_uri
    return pa.array([name] * n, pa.string()) if n else pa.array([], pa.string())


def _put(values: pa.Array, rows: np.ndarray, new: pa.Array) -> pa.Array:
    """``values`` with ``new`` at ``rows``."""
    out = np.asarray(values.to_pylist(), dtype=object)
    out[rows] = np.asarray(new.to_pylist(), dtype=object)
    return pa.array(out.tolist(), pa.string())


def _last_values(table: pa.Table) -> dict[str, dict[str, str | None]]:
    """Each e-mail's fields merged in input order: per field, its last non-empty value."""
    grouped = table.select(list(OUTPUT)).group_by("email", use_threads=False)
    last = grouped.aggregate([(f, "last") for f in LEAD_FIELDS])
    emails = last.column("email").to_pylist()
    columns = {f: last.column(f"{f}_last").to_pylist() for f in LEAD_FIELDS}
    return {email: {f: columns[f][i] for f in LEAD_FIELDS} for i, email in enumerate(emails)}


def _updated(
    start: KeyState, fields: Mapping[str, str | None], batch_id: str, now: str
) -> KeyState:
    """The stored lead ``start`` with this batch's merged ``fields``: a value replaces the
    stored one, an empty value never does. A batch older than the lead's last update (a
    redrive of a batch that failed before a later one ran) only fills what is empty, and is
    the lead's first batch if it is older than that too. A lead stored without bookkeeping (an
    item written by another program) gets this batch's."""
    lead = dict(start)
    older = bool(start.get("updated_at")) and now < str(start["updated_at"])
    for field, value in fields.items():
        if value is not None and (not older or _empty(lead.get(field)) is None):
            lead[field] = value
    created = start.get("created_at")
    if not lead.get("first_batch") or not created or now < str(created):
        lead["first_batch"], lead["created_at"] = batch_id, now
    return lead


def _last_files(table: pa.Table) -> dict[str, str]:
    """Each e-mail's last file name among its records without a source."""
    if FILE not in table.column_names:
        return {}
    last = table.select(["email", FILE]).group_by("email", use_threads=False)
    found = last.aggregate([(FILE, "last")])
    names = found.column(f"{FILE}_last").to_pylist()
    return {e: n for e, n in zip(found.column("email").to_pylist(), names, strict=True) if n}


def _empty(value: object) -> object:
    """A field's value for comparing: ``N/A`` and blanks are no value."""
    return None if value in (None, "", NO_PHONE) else value


def _with_actions(work: pa.Table, actions: Mapping[str, str]) -> pa.Table:
    """The bucket's kept records, a missing phone written ``N/A``, with ``lead_action``: the
    e-mail's action on its last record, ``merged`` on the others."""
    emails = work.column("email").combine_chunks()
    n = work.num_rows
    last = np.ones(n, dtype=bool)
    if n > 1:
        codes = pc.dictionary_encode(emails).indices.to_numpy(zero_copy_only=False)
        last[:-1] = codes[:-1] != codes[1:]
    names = emails.to_pylist()
    action = [actions[names[i]] if last[i] else "merged" for i in range(n)]
    phones = pc.fill_null(work.column("phone"), NO_PHONE)
    work = work.set_column(work.column_names.index("phone"), "phone", phones)
    if FILE in work.column_names:  # a record's source: its own, else its file's name
        at = work.column_names.index("source")
        sources = pc.coalesce(work.column("source"), work.column(FILE))
        work = work.set_column(at, "source", sources).drop_columns([FILE])
    return work.append_column(ACTION, pa.array(action, pa.string()))


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
