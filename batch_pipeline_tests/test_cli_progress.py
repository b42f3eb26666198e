"""``batch-pipeline run`` draws its progress bar on the terminal it was started from (drawn in
the CLI process from the ledger, on a copy of the original stderr: Dagster's compute-log
capture redirects fd 2 while a step runs); on a pipe there is no bar unless ``--progress``."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import threading
from pathlib import Path

import pytest

from batch_pipeline_tests.fault_helpers import CLI, FAULTS_MODULE, REPO

pytestmark = pytest.mark.slow

CHUNKS = 4
BAR = re.compile(rf"chunks:\s+100%\|.*\| {CHUNKS}/{CHUNKS} ")


def command(tmp_path: Path, *extra: str) -> list[str]:
    source = tmp_path / "rows.csv"
    source.write_text("n\n" + "".join(f"{i}\n" for i in range(CHUNKS * 5)))
    return [
        CLI, "run", str(source), "--output", str(tmp_path / "out"), "--chunk-records", "5",
        "--processor-module", FAULTS_MODULE, "--processor", "fault_slow",
        "--processor-options", json.dumps({"seconds": 0.6}), "--deliver", "none", *extra,
    ]  # fmt: skip


def environment(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": python_path,
            "COLUMNS": "100"}  # fmt: skip


@pytest.mark.timeout(300)
def test_the_bar_reaches_the_terminal(tmp_path: Path) -> None:
    terminal, child = pty.openpty()
    received = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(terminal, 4096)
            except OSError:  # the child side closed
                return
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process = subprocess.Popen(
            command(tmp_path), stdin=child, stdout=child, stderr=child, env=environment(tmp_path)
        )
        try:
            code = process.wait(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        os.close(child)
        reader.join(timeout=30)
        os.close(terminal)
    text = received.decode(errors="replace")
    assert code == 0, text
    assert BAR.search(text), text  # the finished bar: chunks 100% 4/4
    assert "SUCCESS" in text


def test_no_bar_on_a_pipe_unless_asked(tmp_path: Path) -> None:
    env = environment(tmp_path)
    done = subprocess.run(
        command(tmp_path, "--batch-id", "piped"), capture_output=True, text=True, env=env,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "chunks:" not in done.stderr and "chunk/s" not in done.stderr
    forced = subprocess.run(
        command(tmp_path, "--batch-id", "forced", "--progress"), capture_output=True, text=True,
        env=env, timeout=240,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert BAR.search(forced.stderr), forced.stderr


def test_no_progress_turns_it_off_on_a_terminal(tmp_path: Path) -> None:
    """--no-progress: nothing of a bar, even on a terminal (stderr a pty, stdout a pipe)."""
    terminal, child = pty.openpty()
    try:
        done = subprocess.run(
            command(tmp_path, "--no-progress"), stdout=subprocess.PIPE, stderr=child,
            env=environment(tmp_path), timeout=240,
        )  # fmt: skip
        os.close(child)
        child = -1
        received = bytearray()
        while True:
            try:
                data = os.read(terminal, 4096)
            except OSError:
                break
            if not data:
                break
            received.extend(data)
    finally:
        if child != -1:
            os.close(child)
        os.close(terminal)
    assert done.returncode == 0
    assert b"chunks:" not in received


def test_a_keyed_batch_counts_its_buckets_as_steps_of_the_bar() -> None:
    import io
    from types import SimpleNamespace

    from batch_pipeline.cli.terminal import _draw, progress_bar

    out = io.StringIO()
    bar = progress_bar(file=out, enabled=True)
    chunks = SimpleNamespace(total=4, done=4)
    _draw(bar, chunks, SimpleNamespace(total=0, done=0))  # one stage: chunks only
    assert (bar.total, bar.n, bar.desc) == (4, 4, "chunks")
    _draw(bar, chunks, SimpleNamespace(total=6, done=2))  # shuffled; 2 of 6 buckets done
    assert (bar.total, bar.n, bar.desc) == (10, 6, "chunks+buckets")
    _draw(bar, chunks, SimpleNamespace(total=6, done=6))
    bar.close()
    assert "chunks+buckets: 100%" in out.getvalue() and "10/10" in out.getvalue()
