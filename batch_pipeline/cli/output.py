"""What the command prints: one line at a time with user-given names escaped, and a user's
mistake as one ``error:`` line (exit code 2).
"""

import sys
from typing import Any

from batch_pipeline.core.common.text import shown


def echo(text: str = "", file: Any = None) -> None:
    """Print one line of output, user-given names in it escaped (``core.text.shown``): a file
    name's newline or ESC must not forge a line or recolour the terminal."""
    print(shown(text), file=file or sys.stdout, flush=file is not None)


def user_error(exc: BaseException, verbose: bool = False) -> int:
    """A mistake of the user's (a ``BatchPipelineError``: the file, the setting, the fix) on
    stderr as ``error: ...``, exit code 2; the traceback only with ``--verbose``."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {shown(exc)}", file=sys.stderr)
    return 2
