"""The throughput benchmark runs end to end at its smallest size and counts every record right.

``benchmarks/throughput.py --smoke`` in a subprocess (its own process group, ended on timeout),
inputs and outputs in the test's temporary folder. No timing is asserted: the machine is shared.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "throughput.py"
KINDS = ("raw", "raw_text", "naive", "pandas", "passthrough", "validate")
TIMEOUT = 180


def _run_smoke(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "throughput.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--smoke",
        "--json",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
        "--tmp-dir",
        str(tmp_path / "tmp"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "BATCH_PIPELINE_LEDGER_URL"}
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the driver ends its running worker, then exits
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        message = f"the smoke benchmark took over {TIMEOUT}s:\n{stdout}\n{stderr}"
        raise AssertionError(message) from None
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), out


def test_throughput_smoke(tmp_path: Path) -> None:
    result, out = _run_smoke(tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["failures"] == []
    assert report["settings"]["sizes"] == ["10k"]
    for key in ("cpus", "python", "dagster", "pyarrow", "pandas", "polars"):
        assert report["machine"][key], key

    entry = report["sizes"]["10k"]
    records, invalid = entry["records"], entry["invalid"]
    assert records == 10_000
    assert 0 < invalid < records * 0.1  # a few percent
    measurements = entry["measurements"]
    assert set(measurements) == set(KINDS)
    for kind in KINDS:
        m = measurements[kind]
        assert m["status"] == "ok", (kind, m["errors"], m["stderr_tail"])
        assert m["records_measured"] == records, kind
        assert m["rate"] > 0 and m["seconds"] > 0, kind
        assert m["peak_rss_bytes"] > 0, kind
        assert not m["sampled"], kind
    for kind in ("naive", "pandas"):
        data = measurements[kind]["data"]
        assert data["rejected"] == invalid, kind
        assert data["valid"] + data["rejected"] == records, kind
    for kind, rejected in (("passthrough", 0), ("validate", invalid)):
        data = measurements[kind]["data"]
        assert data["success"] is True
        assert data["records_in"] == records
        assert data["records_rejected"] == rejected
        assert data["records_out"] == records - rejected
        assert data["chunks"] >= 1 and data["chunks_succeeded"] == data["chunks"]
        assert data["steps"] == data["chunks"] + 4  # initialize, plan, chunks, aggregate, deliver
        assert data["chunk_peak_rss_max_bytes"] > 0
        derived = entry["derived"][kind]
        assert 0 <= derived["orchestration_share"] < 1
        assert derived["step_peak_rss_bytes"] > 0

    derived = entry["derived"]
    for key in (
        "passthrough_vs_raw",
        "passthrough_vs_raw_text",
        "validate_vs_naive",
        "validate_time_vs_pandas",
        "validate_memory_vs_pandas",
    ):
        assert derived[key] > 0, key

    small = report["small_job"]
    assert small["status"] == "ok"
    assert small["data"]["records_in"] == 500 and small["data"]["records_out"] > 0
    assert len(small["data"]["repeat_walls"]) == 2
    plan = report["planning"]
    assert plan["status"] == "ok"
    assert plan["data"]["chunks"] == 10_000 and plan["data"]["records"] == records

    goals = {g["goal"]: g for g in report["goals"]}
    assert set(goals) == {
        "validate_60m_seconds",
        "passthrough_vs_raw",
        "validate_vs_naive",
        "validate_vs_pandas",
        "orchestration_share",
        "step_peak_memory",
        "small_job_seconds",
        "plan_10k_chunks_seconds",
    }
    assert goals["validate_60m_seconds"]["met"] is None  # not measured at 10k
    assert all(g["met"] in (True, False) for k, g in goals.items() if k != "validate_60m_seconds")
    # Nothing is left behind in the run's temporary folder (inputs are cached in data/).
    assert list((tmp_path / "tmp").iterdir()) == []
    assert "| 10k |" in result.stdout and "### Goals" in result.stdout
