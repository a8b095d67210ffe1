"""The unit files in units/: systemd-analyze verify, and the security
exposure of the service, as measured when the hardening was chosen."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = REPO / "units"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed"
)
# `systemd-analyze security --offline=true` gave 4.8 for circusd.service and
# circusd@.service with systemd 252 (Debian 12) when the hardening was chosen;
# a change that raises it must be a decision, so the test holds it there.
MEASURED_EXPOSURE = 4.8
REQUIRED_EXPOSURE = 6.0
SERVICES = ("circusd.service", "circusd@web.service")


def installed_copy(directory: Path) -> Path:
    """The units as a host would have them, with the circusd of this checkout
    in place of /usr/bin/circusd (verify insists the binary exists), and the
    templates as instance ``web``."""
    circusd = Path(sys.executable).parent / "circusd"
    assert circusd.exists(), f"{circusd} missing: run make venv"
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/usr/bin/circusd", str(circusd))
        (directory / unit.name.replace("@.", "@web.")).write_text(text)
    return directory


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_analyze
def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    units = installed_copy(tmp_path)
    names = sorted(path.name for path in units.iterdir())
    assert names == [
        "circusd.service",
        "circusd.socket",
        "circusd@web.service",
        "circusd@web.socket",
    ]
    result = analyze("verify", *names, cwd=units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_analyze
@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure_stays_at_the_measured_level(tmp_path, service):
    units = installed_copy(tmp_path)
    threshold = round(MEASURED_EXPOSURE * 10)  # the scale of --threshold
    result = analyze(
        "security", "--offline=true", f"--threshold={threshold}", service, cwd=units
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= MEASURED_EXPOSURE <= REQUIRED_EXPOSURE


HARDENING = re.compile(
    r"^(Protect|Private|Restrict|SystemCall|Capability|Lock|NoNew|Memory)\w*="
)


def test_instances_are_hardened_exactly_like_the_main_service():
    def directives(name: str) -> list[str]:
        lines = (UNITS / name).read_text().splitlines()
        return sorted(line for line in lines if HARDENING.match(line))

    assert directives("circusd@.service") == directives("circusd.service")
    assert len(directives("circusd.service")) >= 15


def test_every_hardening_directive_left_out_says_why():
    text = (UNITS / "circusd.service").read_text()
    left_out = text.split("Hardening left out", 1)[1]
    for directive in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateNetwork",
        "ProtectProc",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
        "PrivateUsers",
        "IPAddressDeny",
        "UMask",
    ):
        assert re.search(rf"^# {directive}=.*:", left_out, re.M) or re.search(
            rf"^# .*\b{directive}=", left_out, re.M
        ), directive
        assert not re.search(rf"^{directive}=", text, re.M), directive
