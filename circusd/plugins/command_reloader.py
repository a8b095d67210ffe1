"""command_reloader: restart a watcher when its executable changes.

The executable is the program the watcher runs: ``executable`` if set,
otherwise the first word of ``cmd``, looked up in the watcher's PATH (its
virtualenv's ``bin`` first) when it has no slash, and taken from its
``working_dir`` when it is relative. Circus stat()ed the whole ``cmd``
string, so a command with arguments was never watched.

Every ``loop_rate`` seconds each executable is stat()ed, in this process:
a new real path (a symlink switched to a new release), a new file at the
same path (an upgrade that replaced it), or a new size or modification time
restarts the watcher, if it is running. Which executable each watcher has
is read once and again on its ``add`` and ``updated`` events, not asked for
at every look.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from typing import Any

from circusd.client.errors import CallError
from circusd.config.plugin_options import BUILTINS
from circusd.plugins.base import Plugin, split_topic

RESYNC = 60.0  # seconds between full re-reads, in case an event was lost
_KEYS = ["cmd", "executable", "env", "virtualenv", "working_dir"]


@dataclass(frozen=True)
class Stamp:
    """What identifies one version of a file."""

    path: str  # the real path, symlinks resolved
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, program: str) -> Stamp | None:
        path = os.path.realpath(program)
        try:
            info = os.stat(path)
        except OSError:
            return None  # missing for a moment (being replaced): look again later
        return cls(path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def executable(options: dict[str, Any], default_path: str) -> str | None:
    """The program a watcher's options run, as a path; None when it cannot
    be known before a process starts (spawn-time variables)."""
    program = options.get("executable")
    if not program:
        try:
            words = shlex.split(str(options.get("cmd") or ""))
        except ValueError:
            return None
        program = words[0] if words else None
    if not program or "$(" in program or "((" in program:
        return None
    if "/" in program:
        return os.path.join(options.get("working_dir") or os.getcwd(), program)
    env = options.get("env") if isinstance(options.get("env"), dict) else {}
    path = env.get("PATH") if env else None
    if not isinstance(path, str) or path == "(hidden)":
        path = default_path
    if options.get("virtualenv"):
        path = os.pathsep.join([os.path.join(options["virtualenv"], "bin"), path])
    return shutil.which(program, path=path)


class CommandReloader(Plugin):
    options = BUILTINS["command_reloader.CommandReloader"].options

    async def handle_init(self) -> None:
        self.programs: dict[str, str] = {}  # watcher -> executable
        self.stamps: dict[str, Stamp] = {}
        await self.read_all()
        self.every(self.config["loop_rate"], self.look_after)
        self.every(RESYNC, self.read_all)

    async def read_all(self) -> None:
        names = [
            name
            for name in (await self.call("list")).get("watchers", [])
            if not name.startswith("plugin:")
        ]
        for gone in set(self.programs) - set(names):
            self.forget(gone)
        for name in names:
            await self.read(name)

    async def read(self, name: str) -> None:
        try:
            reply = await self.call("get", name=name, keys=_KEYS)
        except CallError:
            self.forget(name)  # removed meanwhile
            return
        program = executable(
            reply.get("options", {}), os.environ.get("PATH", os.defpath)
        )
        if program is None:
            self.forget(name)
            return
        if self.programs.get(name) != program:
            self.programs[name] = program
            stamp = Stamp.of(program)
            if stamp is not None:
                self.stamps[name] = stamp

    def forget(self, name: str) -> None:
        self.programs.pop(name, None)
        self.stamps.pop(name, None)

    async def handle_recv(self, topic: str, event: dict[str, Any]) -> None:
        name, action = split_topic(topic)
        if name.startswith("plugin:"):
            return
        if action in ("add", "updated"):
            await self.read(name)
        elif action == "remove":
            self.forget(name)

    async def look_after(self) -> None:
        for name, program in list(self.programs.items()):
            stamp = Stamp.of(program)
            if stamp is None:
                continue
            before = self.stamps.get(name)
            self.stamps[name] = stamp
            if before is None or before == stamp:
                continue
            await self.restart(name, stamp)

    async def restart(self, name: str, stamp: Stamp) -> None:
        try:
            status = (await self.call("status", name=name)).get("status")
            if status not in ("active", "starting"):
                return
            self.log.info(
                "executable changed, restarting watcher=%s path=%s", name, stamp.path
            )
            await self.call("restart", name=name)
        except CallError as exc:
            self.log.warning("restart failed watcher=%s error=%s", name, exc)
