"""Ledger URLs: the password in one (``url_password``), one shown without it (``safe_url``), the
URL SQLAlchemy is given (``engine_url``: a Postgres driver that is installed) and the file of a
SQLite one (``sqlite_path``).

Which URL a process uses when none is given is decided at the edge (``batch_pipeline.settings.
default_ledger_url``), never here: the core reads no environment.
"""

from __future__ import annotations

import importlib.util
import re

import sqlalchemy as sa

# user:password@ in a URL SQLAlchemy cannot parse (the password's text is never shown).
_PASSWORD_IN_URL = re.compile(r"//[^/@:]*:[^/@]+@")


def url_password(url: str) -> str | None:
    """The password written in a ledger URL (None: there is none)."""
    try:
        return sa.engine.make_url(url).password or None
    except Exception:  # unparseable: a password still must not pass
        found = _PASSWORD_IN_URL.search(url)
        return found.group(0) if found else None


def safe_url(url: str) -> str:
    """``url`` with its password shown as ``***``, for messages (also one SQLAlchemy cannot
    parse)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_URL.sub(lambda m: m.group(0).split(":")[0] + ":***@", url)


def engine_url(url: str) -> sa.URL:
    """``url`` with a driver that is installed: a bare ``postgresql://`` means psycopg (3) to
    SQLAlchemy 2.1 but psycopg2 to 2.0, and the ``postgres`` extra (like dagster-postgres)
    installs psycopg2; take whichever is there."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"postgresql+{driver}")
    return parsed


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL; "" for the in-memory database."""
    path = url.split("///", 1)[1] if "///" in url else ""
    return "" if path == ":memory:" else path
