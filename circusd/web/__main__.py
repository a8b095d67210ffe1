"""``python -m circusd.web``: the same as the ``circushttpd`` command (this
is how circusd starts the console under ``httpd = true``)."""

from circusd.cli.httpd import main

main()
