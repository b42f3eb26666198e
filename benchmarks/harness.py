"""The harness the benchmarks share: a measurement in a process of its own, its peak memory, the
common options, the tables' number formats and the JSON report.

A driver starts ``python -m <its module> --worker JSON`` in a session and process group of its
own (:func:`run_worker_process`), polls the resident memory of its process tree, kills the group
after the timeout and ends whatever the worker left behind. The worker runs one measurement
(:func:`serve_worker`) and prints its figures, with its own peak memory, as one JSON line.
Only the standard library is imported at module level: every worker process imports this module
before it measures anything, and so does every step process that ``spawn`` starts for
``executor_overhead``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
STDERR_TAIL = 3000
PACKAGES = ("dagster", "pyarrow", "pandas", "polars", "duckdb", "numpy")

#: A worker: one measurement, from its task to its figures (JSON-serializable).
Worker = Callable[[dict[str, Any]], dict[str, Any]]

# --- process groups ------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def end_group(pgid: int, grace: float = 5.0) -> int:
    """Wait up to ``grace`` s for the group we started to be gone; then end it. Returns how many
    processes were still there."""
    deadline = time.monotonic() + grace
    members = group_members(pgid)
    while members and time.monotonic() < deadline:
        time.sleep(0.2)
        members = group_members(pgid)
    if members:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(1.0)
    return len(members)


# --- peak memory ---------------------------------------------------------------------------------


def self_peak_rss() -> dict[str, int]:
    """This process's peak resident memory: ``VmHWM`` (the high-water mark of this program's
    memory, from its exec on), and the largest waited-for child's ``ru_maxrss``. Not
    ``RUSAGE_SELF``: Linux carries the parent's maxrss over fork and exec, so a worker started by
    a big driver would report the driver's peak."""
    import resource

    peak = 0
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "self_maxrss_bytes": peak,
        "children_maxrss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


class TreePoller(threading.Thread):
    """Polls the resident memory of a process and its descendants; ``peak`` is the highest sum.

    With ``limit`` (bytes): once the sum passes it, the process's group (its session's, as
    :func:`run_worker_process` starts it) is killed, and ``stopped_seconds`` (since the poller
    started) and ``stopped_rss`` say when and at how much."""

    def __init__(self, pid: int, interval: float = 0.05, limit: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.limit = limit
        self.peak = 0
        self.stopped_seconds: float | None = None
        self.stopped_rss: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        started = time.perf_counter()
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            if self.limit is not None and total > self.limit:
                self.stopped_seconds = time.perf_counter() - started
                self.stopped_rss = total
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                break
            self.stop.wait(self.interval)


# --- a worker process ----------------------------------------------------------------------------


@dataclass
class WorkerRun:
    """How a worker process went: the last JSON line it printed ({} if none, or timed out)."""

    data: dict[str, Any]
    stderr: str
    returncode: int
    timed_out: bool
    seconds: float  # the process, start to exit (imports included)
    leftover: int  # processes of its group that outlived it, ended
    polled_peak_rss_bytes: int = 0  # 0: not polled
    stopped_seconds: float | None = None  # killed at the memory limit this long after start
    stopped_rss_bytes: int | None = None  # the process tree's memory then


def run_worker_process(
    module: str,
    payload: str,
    timeout: float,
    poll_memory: bool = True,
    memory_limit: int | None = None,
) -> WorkerRun:
    """``python -m module --worker payload`` from the repository root, in its own session; its
    process group is killed after ``timeout`` s, when its process tree's resident memory passes
    ``memory_limit`` bytes (polled; None: no limit), or when the driver is interrupted."""
    command = [sys.executable, "-m", module, "--worker", payload]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=str(ROOT),
    )
    poller = TreePoller(proc.pid, limit=memory_limit) if poll_memory else None
    if poller is not None:
        poller.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    except BaseException:  # Ctrl-C, or SIGTERM (see end_on_sigterm): the worker goes with us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        if poller is not None:
            poller.stop.set()
            poller.join()
    elapsed = time.perf_counter() - started
    leftover = end_group(proc.pid)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    stopped = poller is not None and poller.stopped_seconds is not None
    data: dict[str, Any] = json.loads(lines[-1]) if lines and not (timed_out or stopped) else {}
    return WorkerRun(
        data,
        stderr,
        proc.returncode,
        timed_out,
        elapsed,
        leftover,
        poller.peak if poller else 0,
        poller.stopped_seconds if poller else None,
        poller.stopped_rss if poller else None,
    )


def run_worker(workers: dict[str, Worker], task: dict[str, Any]) -> dict[str, Any]:
    """In the worker process: ``task["worker"]``'s figures, ``ok`` (or the error) and the peak
    memory of this process."""
    try:
        data = workers[task["worker"]](task)
        data["ok"] = True
    except Exception as exc:  # reported to the driver, which fails the benchmark
        import traceback

        data = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    return data | self_peak_rss()


def serve_worker(workers: dict[str, Worker], task: str) -> int:
    """``--worker TASK``: run it and print the result as the one JSON line the driver reads."""
    print(json.dumps(run_worker(workers, json.loads(task)), default=str), flush=True)
    return 0


# --- a measurement -------------------------------------------------------------------------------


@dataclass
class Measurement:
    kind: str  # raw, naive, pandas, passthrough, validate, small_job, plan, per_file, file_set...
    size: str
    records: int  # records in the input
    status: str = "ok"  # ok, failed, timeout, skipped (memory), stopped (memory)
    seconds: float | None = None
    records_measured: int | None = None
    rate: float | None = None  # records/s
    sampled: bool = False
    peak_rss_bytes: int | None = None
    polled_peak_rss_bytes: int | None = None
    process_seconds: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stderr_tail: str | None = None


def run_task(
    task: dict[str, Any], timeout: float, module: str, memory_limit: int | None = None
) -> tuple[dict[str, Any], Measurement]:
    """Run one worker of ``module`` in a fresh process, in a temporary folder of its own that is
    removed afterwards whatever happened (a killed worker cannot clean up); return its JSON and
    the measurement. With ``memory_limit`` (bytes), a worker whose process tree passes it is
    killed: status ``stopped (memory)``, with when and at how much in ``data``."""
    work = tempfile.mkdtemp(prefix="throughput-", dir=task.get("tmp_dir"))
    try:
        return _run_task(task | {"tmp_dir": work}, timeout, module, memory_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_task(
    task: dict[str, Any], timeout: float, module: str, memory_limit: int | None = None
) -> tuple[dict[str, Any], Measurement]:
    run = run_worker_process(module, json.dumps(task), timeout, memory_limit=memory_limit)
    data = run.data
    m = Measurement(kind=task["kind"], size=task["size"], records=task["records"])
    m.process_seconds = run.seconds
    m.polled_peak_rss_bytes = run.polled_peak_rss_bytes or None
    if run.stopped_seconds is not None and run.stopped_rss_bytes is not None:
        m.status = "stopped (memory)"
        data = {
            "stopped_seconds": run.stopped_seconds,
            "stopped_rss_bytes": run.stopped_rss_bytes,
            "memory_limit_bytes": memory_limit,
        }
        m.errors.append(
            f"stopped at {run.stopped_seconds:.1f}s of the process with "
            f"{run.stopped_rss_bytes / 2**20:,.0f} MiB resident (limit "
            f"{(memory_limit or 0) / 2**20:,.0f} MiB); process group killed"
        )
    elif run.timed_out:
        m.status = "timeout"
        data = {"stopped_seconds": run.seconds, "stopped_rss_bytes": run.polled_peak_rss_bytes}
        m.errors.append(f"timed out after {timeout:.0f}s; process group killed")
    elif not data:
        m.status = "failed"
        m.errors.append(f"the worker exited with code {run.returncode} and no result")
    elif not data.get("ok"):
        m.status = "failed"
        m.errors.append(data.get("error", "failed"))
    if run.leftover:
        m.errors.append(f"{run.leftover} process(es) outlived the worker and were ended")
    if m.status != "ok" or run.returncode:
        m.stderr_tail = run.stderr[-STDERR_TAIL:] or None
    peaks = [data.get("self_maxrss_bytes") or 0, run.polled_peak_rss_bytes]
    m.peak_rss_bytes = max(peaks) or None
    m.data = data
    m.seconds = data.get("seconds")
    m.records_measured = data.get("records")
    if m.seconds and m.records_measured:
        m.rate = m.records_measured / m.seconds
    return data, m


def warm(paths: Iterable[str]) -> None:
    """Read each file once so that every measurement starts with it in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass


# --- numbers in tables ---------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rate_text(m: dict[str, Any] | Measurement | None) -> str:
    """Records/s as a table shows it (1.54M, 25.3k), the status if not ok."""
    if m is None:
        return "-"
    m = m if isinstance(m, dict) else asdict(m)
    if m["status"] != "ok":
        return m["status"]
    text = f"{m['rate'] / 1e6:,.2f}M" if m["rate"] >= 1e5 else f"{m['rate'] / 1e3:,.1f}k"
    return text + (" (sampled)" if m["sampled"] else "")


def print_measurement(m: Measurement) -> None:
    measured = f"{m.records_measured:,}" if m.records_measured is not None else "-"
    print(
        f"  {m.kind:<11} {m.status:<16} {fmt(m.seconds, 2, ' s'):>10} "
        f"{rate_text(m):>18} rec/s  records {measured:>12}  peak {mib(m.peak_rss_bytes):>6} MiB  "
        f"(process {fmt(m.process_seconds, 1, ' s')})",
        flush=True,
    )
    for error in m.errors[:4]:
        lines = error.strip().splitlines()
        print(f"      error: {lines[0][:300] if lines else error}", flush=True)


# --- the command line ----------------------------------------------------------------------------


def add_common_args(
    parser: argparse.ArgumentParser, kinds: Sequence[str], seed: int, timeout: float, name: str
) -> None:
    """The options of a driver of measurements: --only (or --kinds), --repeats, --seed, --data-dir,
    --tmp-dir, --timeout (default ``timeout``; --smoke: 120 s), --json (default
    ``benchmarks/results/NAME.json``) and the hidden --worker."""
    parser.add_argument(
        "--only",
        "--kinds",
        dest="only",
        help="measure only these kinds (comma-separated, of " + ",".join(kinds) + "; or all)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--data-dir", default=None, help="generated inputs (default data/bench)")
    parser.add_argument("--tmp-dir", default=None, help="where runs write their outputs")
    parser.add_argument(
        "--timeout", type=float, default=None, help=f"s per measurement ({timeout:.0f})"
    )
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / f"{name}.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def apply_common_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, kinds: Sequence[str], timeout: float
) -> None:
    """``args.kinds`` from --only (all: every kind), the timeout's default, the temporary
    folder made; SIGTERM then ends the driver and its running worker."""
    only = args.only if args.only and args.only.strip() != "all" else None
    args.kinds = [k.strip() for k in only.split(",")] if only else list(kinds)
    if set(args.kinds) - set(kinds):
        parser.error(f"--only/--kinds takes all or {', '.join(kinds)}")
    if args.timeout is None:
        args.timeout = 120.0 if args.smoke else timeout
    if args.tmp_dir:
        os.makedirs(args.tmp_dir, exist_ok=True)
    end_on_sigterm()


def end_on_sigterm() -> None:
    def terminate(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)  # run_worker_process ends the running worker's group

    signal.signal(signal.SIGTERM, terminate)


# --- the report ----------------------------------------------------------------------------------


def machine_info(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")


def write_report(report: dict[str, Any], path: Path) -> int:
    """Print the total, write the JSON report, list its failures: the exit code (1 if any)."""
    print(f"\ntotal {report['total_seconds']:.0f}s")
    write_json(report, path)
    failures = report.get("failures") or []
    if failures:
        print(f"{len(failures)} measurement(s) failed or miscounted:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
