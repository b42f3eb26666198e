"""The casing of one name, company or job title (``rules`` calls these once per distinct value).

Each takes text whose whitespace is already collapsed to single spaces and trimmed, not blank.

Names: a word written all lower-case or all upper-case is re-cased, each run of letters
capitalized (``o'neil`` -> ``O'Neil``, ``JEAN-LUC`` -> ``Jean-Luc``), ``Mc`` followed by a
capital (``mcdonald`` -> ``McDonald``; ``Mac`` is left alone, as Mack and Macy are names too);
a word in mixed case is kept as written (``DeShawn``, ``MacArthur``, ``Van`` in ``Martin Van
Buren``). A particle (van, von, der, de, la, ...) written all lower or all upper is lower-case
between the first and the last word (``LUDWIG VAN BEETHOVEN`` -> ``Ludwig van Beethoven``; the
last word is a surname: ``ANNA LE`` -> ``Anna Le``). The suffixes Jr., Sr., II, III and IV are
written so after the first word, in any case, with or without a dot.

Companies: a trailing legal suffix (the last word or words, matched ignoring case and dots,
commas read as spaces, a comma before it or not; the longest suffix of the table first) is
written as the table says, after a space and without a comma (``acme, inc`` -> ``Acme Inc.``,
``Foo Co.,Ltd`` -> ``Foo Co., Ltd.``), when a name comes before it (``Inc`` alone is kept).
Words written all lower-case are capitalized (after ``-``, ``/`` and ``&`` too: ``at&t`` ->
``At&T``), except the small words of titles after the first word (``bank of america`` -> ``Bank
of America``); other words are kept as written (``IBM``, ``eBay``, ``ACME``).

Titles: each word (and each part of it around ``-`` and ``/``) that is an acronym of the table,
matched case-insensitively, is written as the table writes it (``vp`` -> ``VP``, ``saas`` ->
``SaaS``); a small word (of, and, the, for, to, in, at, on, a, an, or) is lower-case except as
the first word; other words in all lower or all upper case are capitalized (``SALES MANAGER``
-> ``Sales Manager``), words in mixed case kept (``iOS``, ``DevOps``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LETTERS = re.compile(r"[^\W\d_]+")
_NAME_SUFFIX = re.compile(r"([^\W\d_]+)\.?(,?)")
_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "dei", "degli", "da", "das", "dos", "di"}
    | {"du", "la", "le", "ten", "ter", "bin", "ibn", "al", "el", "af", "zu"}
)
_NAME_SUFFIXES = {"jr": "Jr.", "sr": "Sr.", "ii": "II", "iii": "III", "iv": "IV"}
SMALL_WORDS = frozenset(["of", "and", "the", "for", "to", "in", "at", "on", "a", "an", "or"])
_TITLE_PART = re.compile(r"([^\w&]*)(.*?)([^\w&]*)")
_TITLE_SPLIT = re.compile(r"([/-])")
_COMPANY_SPLIT = re.compile(r"([-/&])")


def _mixed(word: str) -> bool:
    """Whether ``word`` has both upper- and lower-case letters (written with care: kept)."""
    return not word.islower() and not word.isupper() and word.lower() != word.upper()


def _name_run(run: str) -> str:
    run = run.lower()
    if run.startswith("mc") and len(run) > 2:
        return "Mc" + run[2:].capitalize()
    return run.capitalize()


def _name_word(word: str, index: int, last: int) -> str:
    if index > 0:
        suffix = _NAME_SUFFIX.fullmatch(word)
        if suffix and suffix[1].lower() in _NAME_SUFFIXES:
            return _NAME_SUFFIXES[suffix[1].lower()] + suffix[2]
    if _mixed(word):
        return word
    if 0 < index < last and word.lower() in _PARTICLES:
        return word.lower()
    if word.isalpha():
        return _name_run(word)
    return _LETTERS.sub(lambda m: _name_run(m[0]), word)


def name_case(text: str) -> str:
    """A person's name re-cased (see the module docstring)."""
    words = text.split(" ")
    last = len(words) - 1
    return " ".join(_name_word(word, i, last) for i, word in enumerate(words))


def suffix_key(text: str) -> str:
    """How a company suffix is matched: lower-case, without dots, commas as spaces, single
    spaces (``L.L.C.`` as ``llc``, ``Co.,Ltd.`` as ``co ltd``)."""
    return " ".join(text.lower().replace(".", "").replace(",", " ").split())


class Suffixes:
    """A suffix table ready for matching: key -> canonical suffix, the most words a key has,
    and the last words of the keys (a name whose last word is none of them has no suffix)."""

    def __init__(self, suffixes: Mapping[str, str]) -> None:
        self.lookup = {suffix_key(variant): canonical for variant, canonical in suffixes.items()}
        self.lookup.pop("", None)
        self.longest = max((key.count(" ") + 1 for key in self.lookup), default=0)
        self.last_words = {key.rsplit(" ", 1)[-1] for key in self.lookup}


def _company_word(word: str, index: int) -> str:
    if not word.islower():
        return word  # upper, mixed, or no letters: as written
    if index > 0 and word in SMALL_WORDS:
        return word
    if "-" not in word and "/" not in word and "&" not in word:
        return word[0].upper() + word[1:]
    return "".join(part[:1].upper() + part[1:] for part in _COMPANY_SPLIT.split(word))


def company_case(text: str, suffixes: Suffixes) -> str:
    """A company name with its legal suffix made uniform (see the module docstring)."""
    words = text.split(" ")
    if "," in words[-1].rstrip(","):  # "Acme,Inc." as "Acme, Inc."
        head, _, tail = words[-1].rpartition(",")
        words[-1:] = [head + ",", tail]
    suffix = None
    last = suffix_key(words[-1]).rpartition(" ")[2]
    if len(words) > 1 and last in suffixes.last_words:
        for size in range(min(suffixes.longest, len(words) - 1), 0, -1):
            canonical = suffixes.lookup.get(suffix_key(" ".join(words[-size:])))
            if canonical is not None:
                suffix, words = canonical, words[:-size]
                words[-1] = words[-1].rstrip(",")
                if not words[-1]:
                    words.pop()
                break
    cased = [_company_word(word, i) for i, word in enumerate(words)]
    if suffix is not None and cased:
        cased.append(suffix)
    return " ".join(cased) if cased else text


def _title_part(part: str, first: bool, acronyms: Mapping[str, str]) -> str:
    lead, core, trail = _TITLE_PART.fullmatch(part).groups()  # type: ignore[union-attr]
    if not core:
        return part
    key = core.lower()
    if key in acronyms:
        core = acronyms[key]
    elif not first and key in SMALL_WORDS:
        core = key
    elif not _mixed(core):
        core = core.capitalize()
    return lead + core + trail


def title_case(text: str, acronyms: Mapping[str, str]) -> str:
    """A job title re-cased (see the module docstring); ``acronyms``: lower-case -> as written."""
    out = []
    for i, word in enumerate(text.split(" ")):
        parts = _TITLE_SPLIT.split(word)
        out.append(
            "".join(_title_part(part, i == 0 and j == 0, acronyms) for j, part in enumerate(parts))
        )
    return " ".join(out)
