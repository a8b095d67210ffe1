"""The benchmark harness (bench/run.py) at a tiny size, so that it cannot rot.

No figure is judged here: a benchmark is never a pass or a fail. The test
checks that one round finishes, that the table has a row for every scenario
and a column for every daemon and the floor, that the JSON file says the same,
and that circusd produced a figure (not an error) everywhere. circusd always
runs; Circus and supervisor run when `make peers` has built them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ssh.sshd import SSHD

REPO = Path(__file__).resolve().parents[2]
PEERS = ("circus", "supervisor")
RUN_TIMEOUT = 150.0
TINY = (
    *("--n", "2", "--rounds", "1", "--kills", "1", "--settle", "0.2"),
    *("--pause", "0", "--idle-seconds", "0.5", "--calls", "5", "--cli-runs", "1"),
    *("--output-mb", "1", "--rest", "0.2", "--ssh-samples", "2"),
)
# The ssh scenario skips, saying why, without root or sshd (tests/ssh/sshd.py).
SSH_SKIPS = os.geteuid() != 0 or not SSHD.exists()


def all_scenarios() -> list[str]:
    """bench/run.py's own list, read from its --help."""
    shown = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    listed = " ".join(shown.split()).split("default: all of ")[1].split(")")[0]
    return listed.replace(" ", "").split(",")


def built_peers() -> list[str]:
    return [name for name in PEERS if (REPO / ".peers" / name / ".installed").exists()]


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_tiny_run_prints_a_table_and_writes_json_for_every_scenario(
    tmp_path: Path,
) -> None:
    daemons = ["circusd", *built_peers()]
    argv = [sys.executable, str(REPO / "bench" / "run.py"), *TINY]
    argv += ["--daemons", ",".join(daemons), "--out", str(tmp_path)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]

    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1, written
    document = json.loads(written[0].read_text())
    rows = document["summary"]["rows"]
    scenarios = {row["cell"].split(".")[0] for row in rows}
    assert scenarios == set(document["args"]["only"])
    assert scenarios == set(all_scenarios())

    table = done.stdout.splitlines()
    assert table[0].split()[: len(daemons) + 2] == ["metric", *daemons, "floor"]
    for row in rows:
        assert any(line.startswith(row["label"]) for line in table), row["label"]
    assert document["table"] in done.stdout

    errors = [e for e in document["summary"]["errors"] if e["daemon"] == "circusd"]
    assert errors == []
    skipped = {s["scenario"] for s in document["summary"]["skipped"]}
    assert skipped == ({"ssh"} if SSH_SKIPS else set())
    for row in rows:
        if row["cell"].startswith("ssh.") and SSH_SKIPS:
            assert row["values"]["circusd"] is None, row
            continue
        assert isinstance(row["values"]["circusd"], int | float), row
        for name in [*daemons[1:], "floor"]:
            value = row["values"][name]
            assert value is None or value == "error" or isinstance(value, int | float)


def test_tcp_callers_bench_identifies_and_times_every_connection():
    """bench/tcp_callers.py at a tiny size: each connection is identified
    as this test's user (the bench asserts it) and both figures print."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "tcp_callers.py")]
        + ["--connections", "5", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "identifying each took median" in done.stdout, done.stdout
    assert "added" in done.stdout, done.stdout
