"""The command's start-up and exit, without the cyclic garbage collector's full passes.

Loading Dagster, pyarrow, SQLAlchemy and the job makes a few million objects that live as long as
the process; the collector walks them again and again while they load (about 0.3 s) and once
more while the interpreter exits (about 0.5 s). As the command (``main`` without ``argv``), the
collector is held off while the command starts (``hold``); it is back on, with everything made
so far frozen (``gc.freeze``: never walked again), before anything that runs long: a job
(``release`` in ``run.execute``), or any other subcommand than ``run`` and ``redrive``
(``release`` in ``main``); at exit, what is left is frozen (``before_exit``). Called from Python
(``main(argv)``, the tests), the collector is left alone.
"""

import gc

_held = False


def hold() -> None:
    """Hold the collector off (when it is on) until ``release``."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """The objects made while held frozen and the collector back on (if ``hold`` turned it
    off)."""
    global _held
    if _held:
        gc.freeze()
        gc.enable()
        _held = False


def before_exit() -> None:
    """Freeze what is left, so that the interpreter's last collections skip it."""
    gc.freeze()
