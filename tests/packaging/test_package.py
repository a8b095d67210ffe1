"""What the built .deb holds and what lintian says of it."""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
from pathlib import Path

import click

from circusd import __version__
from circusd.cli import httpd
from circusd.cli.circusctl import cli
from circusd.cli.daemon import make_parser
from tests.conftest import REPO
from tests.packaging.conftest import BUILD_TIMEOUT, DEBIAN_PATH, Build

RUNTIME = (
    "python3-zmq",
    "python3-psutil",
    "python3-paramiko",
    "python3-click",
    "python3-prctl",
    "python3-sdnotify",
)


def dpkg_deb(*args: str) -> str:
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def unpacked(package: Build, tmp_path: Path) -> Path:
    dpkg_deb("-x", str(package.deb), str(tmp_path))
    dpkg_deb("-e", str(package.deb), str(tmp_path / "DEBIAN"))
    return tmp_path


def test_lintian_pedantic_reports_nothing_but_overrides_with_reasons(package, capsys):
    result = subprocess.run(
        ["lintian", "--pedantic", "-I", "-E", str(package.changes)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8"},
    )
    noise = "running with root privileges is not recommended!"
    output = [
        line for line in (result.stdout + result.stderr).splitlines() if line != noise
    ]
    with capsys.disabled():
        print(f"\nbuilt circusd {package.version} in {package.seconds:.1f} s")
    assert result.returncode == 0 and output == [], "\n".join(output)


def test_make_deb_builds_from_a_fresh_clone_and_leaves_it_clean(package, tmp_path):
    """`make deb` as docs/install.md says, in a clone of the committed tree,
    with nothing but Debian's PATH: no venv, no earlier build."""
    clone = tmp_path / "circusd"
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO), str(clone)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    result = subprocess.run(
        ["make", "deb"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={"PATH": DEBIAN_PATH, "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / "dist" / package.deb.name).is_file()
    left = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert left == "!! dist/\n", left


def test_every_lintian_override_gives_its_reason():
    lines = (REPO / "packaging/debian/circusd.lintian-overrides").read_text()
    previous = ""
    for line in lines.splitlines():
        if line.startswith("circusd: "):
            assert previous.startswith(("#", "circusd: ")), line
        previous = line
    assert lines.count("circusd: ") >= 1


def test_version_is_the_code_version(package):
    assert package.version.split("-")[0] == __version__
    control = dpkg_deb("-f", str(package.deb), "Version")
    assert control.strip() == package.version


def test_depends_on_debian_runtime_packages(package):
    depends = dpkg_deb("-f", str(package.deb), "Depends")
    names = {re.split(r"[ (]", item.strip())[0] for item in depends.split(",")}
    assert set(RUNTIME) <= names, depends
    assert "adduser" in names and "python3:any" in names


def test_holds_units_config_man_pages_and_completion(package, tmp_path):
    root = unpacked(package, tmp_path)
    for unit in ("circusd.service", "circusd.socket", "circusd@.service"):
        packaged = (root / "lib/systemd/system" / unit).read_text()
        assert packaged == (REPO / "units" / unit).read_text()
    assert (root / "usr/share/bash-completion/completions/circusctl").exists()
    conffiles = (root / "DEBIAN/conffiles").read_text().split()
    assert "/etc/circus/circusd.ini" in conffiles
    ini = (root / "etc/circus/circusd.ini").read_text()
    assert "endpoint = ipc:///run/circus/ctl.sock" in ini
    assert "include_dir = conf.d" in ini
    assert "[watcher:" not in ini
    for script in ("postinst", "prerm", "postrm"):
        assert (root / "DEBIAN" / script).stat().st_mode & 0o111


def man_text(path: Path) -> str:
    """The page as roff source, with roff's escaped hyphens made plain."""
    return gzip.decompress(path.read_bytes()).decode().replace("\\-", "-")


def test_man_pages_describe_every_option_and_command(package, tmp_path):
    root = unpacked(package, tmp_path)
    circusd = man_text(root / "usr/share/man/man8/circusd.8.gz")
    for action in make_parser()._actions:
        for name in action.option_strings:
            assert name in circusd, name
    circusctl = man_text(root / "usr/share/man/man1/circusctl.1.gz")
    context = click.Context(cli, info_name="circusctl")
    for name in cli.list_commands(context):
        assert f".SS {name}\n" in circusctl, name
        command = cli.get_command(context, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[0] in circusctl, f"{name} {param.opts[0]}"
    for param in cli.params:
        if isinstance(param, click.Option):
            assert param.opts[0] in circusctl, param.opts[0]
    circushttpd = man_text(root / "usr/share/man/man8/circushttpd.8.gz")
    subcommands = next(
        a
        for a in httpd.make_parser()._actions
        if isinstance(a, argparse._SubParsersAction)
    )
    for name, parser in subcommands.choices.items():
        assert f".SS {name}\n" in circushttpd, name
        for action in parser._actions:
            for option in action.option_strings:
                assert option in circushttpd, f"{name} {option}"
