"""``python -m circusd.plugins``: run one plugin, its settings on stdin.

circusd starts it for each ``[plugin:NAME]`` section. To run a plugin by
hand against a running circusd, give it the same JSON document::

    echo '{"format": 1, "name": "stats", "use": "circus.plugins.statsd.FullStats",
           "endpoint": "ipc:///run/circusd/ctl.sock",
           "pubsub_endpoint": "ipc:///run/circusd/pub.sock",
           "options": {"loop_rate": "10"}}' | python -m circusd.plugins

Exit codes: 0 stopped, 1 failed (worth retrying), 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from circusd.cli.daemon import setup_logging
from circusd.plugins.base import PluginError, Settings
from circusd.plugins.runner import (
    EXIT_CONFIG,
    Channel,
    ChannelHandler,
    read_settings,
    run,
)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m circusd.plugins",
        description="Run one circusd plugin. Its settings, a JSON object, "
        "are read from stdin.",
    ).parse_args(argv)
    try:
        data = read_settings()
    except (PluginError, OSError) as exc:
        print(f"circusd plugin: cannot read settings: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    channel = Channel.from_stdin()
    try:
        settings = Settings.from_json(data)
    except PluginError as exc:
        if channel is not None:
            channel.error(exc)
        print(f"circusd plugin: {exc.reason}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    own = f"circusd.plugin.{settings.name}"
    if channel is None:
        setup_logging(settings.loglevel, "-", program="circusd-plugin")
    else:
        root = logging.getLogger()
        root.handlers[:] = [ChannelHandler(channel, own)]
        root.setLevel(settings.loglevel.upper())
    sys.exit(asyncio.run(run(settings, channel)))
