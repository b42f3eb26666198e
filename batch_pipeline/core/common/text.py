"""User-given text (file names, sheet names, batch ids, error messages quoting them) made safe to
show on one line: in a log line, a Failure's description, the CLI's output.

A file named ``evil\\nERROR forged line.csv`` must not start a line of its own in the Dagster
log, nor a name holding ESC sequences recolour a terminal. ``shown`` escapes control characters
and leaves everything else (unicode included) as it is; ``quoted`` is the form for a name in a
sentence.
"""

from __future__ import annotations

import re

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: object) -> str:
    """``text`` on one line: ``\\n`` as ``\\\\n``, ``\\r`` and ``\\t`` likewise, other control
    characters as ``\\\\xNN``; unchanged otherwise."""
    return _CONTROL.sub(_escape, str(text))


def quoted(name: object) -> str:
    """A name for a sentence: ``'name'``, escaped as by ``shown``."""
    return f"'{shown(name)}'"
