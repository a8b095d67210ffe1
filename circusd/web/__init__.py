"""circushttpd, the web console: a separate, unprivileged process that
talks to circusd only through its control, event and statistics endpoints,
so it has exactly the rights of the uid it runs as.

``settings`` (where it listens), ``passwords`` (the users file),
``sessions`` and ``throttle`` (logins), ``security`` (request checks and
headers), ``link`` (circusd's endpoints), ``model`` and ``console`` (what is
known about the watchers, kept current by events), ``hub`` (fan-out to open
pages), ``pages`` (HTML), ``views`` (routes), ``server`` (running it).
The command line is ``circusd.cli.httpd``.
"""
