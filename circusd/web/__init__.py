"""circushttpd, the web console: a separate, unprivileged process that
talks to circusd only through its control, event and statistics endpoints,
so it has exactly the rights of the uid it runs as.

``settings`` (where it listens), ``passwords`` (the users file),
``sessions`` and ``throttle`` (logins), ``security`` (request checks and
headers), ``gate`` (the checks every route goes through, logging in and
out), ``link`` (circusd's endpoints), ``model`` and ``console`` (what is
known about the watchers, kept current by events), ``hub`` (fan-out to open
pages), ``pages`` (HTML), ``assets`` (the script, style sheet and icon),
``views`` (the other routes), ``server`` (running it). The command line is
``circusd.cli.httpd``; docs/web.md is the user's guide.
"""
