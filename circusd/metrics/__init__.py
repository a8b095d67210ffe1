"""Statistics and metrics, collected outside the daemon's event loop.

The daemon binds the listening sockets (the ``stats_endpoint`` stream and the
``prometheus_endpoint`` page) and runs one helper process, ``circusd-stats``,
that does all the psutil work and all the publishing. The daemon tells the
helper what exists (watchers, their state and processes, sockets) by writing
a snapshot to the helper's stdin whenever that changes; it never samples a
process itself. See ``service`` (daemon side) and ``helper`` (the process).
"""
