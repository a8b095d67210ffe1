"""Plugins for the tests: each shows one thing a plugin can do or get wrong.

The daemon under test gets this directory on PYTHONPATH; its plugins
inherit it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from circusd.config import values
from circusd.plugins import Option, Plugin


class Recorder(Plugin):
    """Writes one JSON line to ``out`` for its start, each event and its stop."""

    options = {
        "out": Option("out", values.text, None, "The file to append to."),
        "greeting": Option("greeting", values.text, "", "Written at start."),
    }

    async def handle_init(self) -> None:
        self.out = open(self.config["out"], "a", buffering=1)  # noqa: SIM115
        reply = await self.call("list")
        self.write(
            start=self.config["greeting"],
            watchers=reply["watchers"],
            pid=os.getpid(),
            uid=os.getuid(),
        )
        self.log.info("recorder ready greeting=%r", self.config["greeting"])

    def handle_recv(self, topic: str, event: dict[str, Any]) -> None:
        self.write(topic=topic, event=event)

    def handle_stop(self) -> None:
        self.write(stop=os.getpid())
        self.out.close()

    def write(self, **fields: Any) -> None:
        self.out.write(json.dumps(fields) + "\n")


class Strict(Plugin):
    options = {"count": Option("count", values.integer, 1, "A number.")}


class CrashAtInit(Plugin):
    def handle_init(self) -> None:
        raise RuntimeError("boom at init")


class CrashLater(Plugin):
    """Dies (exit status 3) a moment after it started."""

    def handle_init(self) -> None:
        self.call_later(float(self.config.get("after", "0.3")), lambda: os._exit(3))


class NotAPlugin:
    pass
