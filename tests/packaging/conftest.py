"""The Debian package, built once per test session with `packaging/build-deb`
(the script behind `make deb`): the version in packaging/debian/changelog,
and a second, later version built from a copy with one more changelog entry,
to upgrade to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "pybuild", "lintian")
BUILD_TIMEOUT = 240
UPGRADE_SUFFIX = "+upgrade1"


@dataclass(frozen=True)
class Build:
    version: str
    deb: Path
    changes: Path
    seconds: float


def changelog_version() -> str:
    first = (REPO / "packaging/debian/changelog").read_text().splitlines()[0]
    return first.split("(", 1)[1].split(")", 1)[0]


def missing_tools() -> list[str]:
    return [tool for tool in BUILD_TOOLS if not shutil.which(tool, path=DEBIAN_PATH)]


def build(out: Path, version: str | None = None) -> Build:
    command = [str(REPO / "packaging/build-deb"), "--out", str(out)]
    if version:
        command += ["--version", version]
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "PATH": DEBIAN_PATH},
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = version or changelog_version()
    return Build(
        version,
        next(out.glob(f"circusd_{version}_*.deb")),
        next(out.glob(f"circusd_{version}_*.changes")),
        seconds,
    )


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Build, Build]:
    """The package as the changelog says, and the same code as a later version."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"{', '.join(missing)} missing: apt-get install debhelper dh-python "
            "pybuild-plugin-pyproject python3-all-dev lintian"
        )
    first = build(tmp_path_factory.mktemp("deb"))
    second = build(
        tmp_path_factory.mktemp("deb-upgrade"), first.version + UPGRADE_SUFFIX
    )
    return first, second


@pytest.fixture(scope="session")
def package(builds: tuple[Build, Build]) -> Build:
    return builds[0]
