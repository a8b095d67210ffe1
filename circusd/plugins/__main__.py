"""``python -m circusd.plugins``: run one plugin (see circusd.plugins.runner)."""

from circusd.cli.plugin import main

main()
