"""Plugins: programs that run beside circusd and talk to it as clients.

Each ``[plugin:NAME]`` section runs ``python -m circusd.plugins`` as a
watcher named ``plugin:NAME``. Write your own by deriving from ``Plugin``;
docs/plugins.md shows how. The plugins circusd ships live in this package
too: ``statsd``, ``watchdog``, ``resource_watcher``, ``command_reloader``.
"""

from circusd.config.options import Option
from circusd.plugins.base import Plugin, PluginError, Repeat, Settings, split_topic

__all__ = ["Option", "Plugin", "PluginError", "Repeat", "Settings", "split_topic"]
