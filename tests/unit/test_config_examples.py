"""Realistic Circus configuration files load as they do with Circus."""

from __future__ import annotations

import resource
import signal
import textwrap
from pathlib import Path

from circusd.config.loader import load
from circusd.config.model import Hook

ENVIRON = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


WEB_APP = """
# A web application behind sockets that circusd binds.
[circus]
check_delay = 5
endpoint = tcp://127.0.0.1:5555
pubsub_endpoint = tcp://127.0.0.1:5556
stats_endpoint = tcp://127.0.0.1:5557

[watcher:webworker]
cmd = chaussette --fd $(circus.sockets.webapp) paste:test.ini
use_sockets = True
numprocesses = 3
copy_env = True
virtualenv = /srv/venv

[watcher:redis]
cmd = redis-server --port 6379
priority = 10
warmup_delay = 0

[socket:webapp]
host = 127.0.0.1
port = 8888

[socket:Admin]
path = run/admin.sock
umask = 007

[env:webworker]
PYTHONUNBUFFERED = 1
DATABASE_URL = postgres://app@localhost/app?sslmode=disable ; inline comment
PATH = $PATH:/srv/venv/bin

[env:redis, web*]
LANG = en_US.UTF-8
"""


def test_web_app_with_sockets_and_env_sections(tmp_path: Path) -> None:
    config = load(write(tmp_path, "web.ini", WEB_APP), ENVIRON)
    assert config.circus.statsd is True
    watchers = {w.name: w for w in config.watchers}
    web = watchers["webworker"]
    assert web.numprocesses == 3 and web.use_sockets and web.copy_env
    assert web.env == {
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": "postgres://app@localhost/app?sslmode=disable",
        "PATH": "/usr/local/bin:/usr/bin:/bin:/srv/venv/bin",
        "LANG": "en_US.UTF-8",
    }
    assert watchers["redis"].env == {"LANG": "en_US.UTF-8"}
    assert watchers["redis"].priority == 10
    sockets = {s.name: s for s in config.sockets}
    assert (sockets["webapp"].host, sockets["webapp"].port) == ("127.0.0.1", 8888)
    assert sockets["admin"].path == str(tmp_path / "run/admin.sock")
    assert sockets["admin"].umask == 0o007


PLUGINS = """
[circus]
endpoint = tcp://127.0.0.1:15555
pubsub_endpoint = tcp://127.0.0.1:15556
statsd = True
stats_endpoint = tcp://127.0.0.1:15557

[watcher:api]
cmd = python -m api.server
args = --workers 2 --bind unix:/run/api.sock
graceful_timeout = 10
stop_signal = SIGINT
max_retry = 3
flapping.max_retry = 2
flapping.window = 10

[plugin:flapping]
use = circus.plugins.flapping.Flapping
window = 10
priority = 1000
retry_in = 3
max_retry = 2

[plugin:statsd]
use = circus.plugins.statsd.StatsdEmitter
host = localhost
port = 8125
sample_rate = 1.0
application_name = example

[plugin:watchdog]
use = circus.plugins.watchdog.WatchDog
loop_rate = 3
watchers_regex = ^api.*$
"""


def test_plugin_sections_and_free_form_watcher_settings(tmp_path: Path) -> None:
    config = load(write(tmp_path, "plugins.ini", PLUGINS), ENVIRON)
    plugins = {p.name: p for p in config.plugins}
    assert set(plugins) == {"flapping", "statsd", "watchdog"}
    assert plugins["flapping"].use == "circus.plugins.flapping.Flapping"
    assert plugins["flapping"].options["priority"] == "1000"
    assert plugins["watchdog"].options["watchers_regex"] == "^api.*$"
    (api,) = config.watchers
    assert api.extra == {"flapping.max_retry": "2", "flapping.window": "10"}
    assert api.stop_signal == signal.SIGINT
    assert api.args == "--workers 2 --bind unix:/run/api.sock"


HOOKS = """
[circus]
endpoint = ipc://run/circus.sock
pubsub_endpoint = ipc://run/pubsub.sock
umask = 002
loglevel = warning
logoutput = log/circusd.log
pidfile = run/circusd.pid

[watcher:queue]
cmd = /srv/queue/bin/worker
args = --queue default
    --queue mail
    --concurrency 4
working_dir = /srv/queue
uid = daemon
gid = daemon
numprocesses = 2
respawn = true
max_age = 3600
max_age_variance = 300
send_hup = true
rlimit_nofile = 4096
rlimit_core = 0
rlimit_as =
stdout_stream.class = FileStream
stdout_stream.filename = log/queue.out
stdout_stream.max_bytes = 10485760
stdout_stream.backup_count = 5
stderr_stream.class = TimedRotatingFileStream
stderr_stream.filename = log/queue.err
stderr_stream.rotate_when = D
stderr_stream.rotate_interval = 1
hooks.before_start = queue.hooks.wait_for_broker
hooks.after_spawn = queue.hooks.register, True
hooks.before_stop = queue.hooks.drain, false
"""


def test_hooks_streams_and_rlimits(tmp_path: Path) -> None:
    config = load(write(tmp_path, "hooks.ini", HOOKS), ENVIRON)
    assert config.circus.endpoint == f"ipc://{tmp_path}/run/circus.sock"
    assert config.circus.umask == 0o002
    assert config.circus.loglevel == "warning"
    assert config.circus.logoutput == str(tmp_path / "log/circusd.log")
    (queue,) = config.watchers
    assert queue.args == "--queue default\n--queue mail\n--concurrency 4"
    assert (queue.uid, queue.gid) == ("daemon", "daemon")
    assert queue.rlimits == {
        "nofile": (4096, 4096),
        "core": (0, 0),
        "as": (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    }
    assert queue.stdout_stream["filename"] == str(tmp_path / "log/queue.out")
    assert queue.stderr_stream["class"] == "TimedRotatingFileStream"
    assert queue.hooks == {
        "before_start": Hook("queue.hooks.wait_for_broker", False),
        "after_spawn": Hook("queue.hooks.register", True),
        "before_stop": Hook("queue.hooks.drain", False),
    }
    assert queue.send_hup and queue.max_age == 3600


def test_split_configuration_with_include_dir(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "etc/circus/circus.ini",
        """
        [circus]
        endpoint = ipc:///run/circus/ctl.sock
        pubsub_endpoint = ipc:///run/circus/pubsub.sock
        include_dir = conf.d
        include = local.ini

        [env]
        APP_ENV = production
        """,
    )
    write(
        tmp_path,
        "etc/circus/conf.d/10-web.ini",
        """
        [socket:web]
        host = 127.0.0.1
        port = 8080

        [watcher:web]
        cmd = gunicorn --bind fd://$(circus.sockets.web) app:wsgi
        numprocesses = 4
        use_sockets = true

        [env:web]
        APP_ROLE = web
        """,
    )
    write(
        tmp_path,
        "etc/circus/conf.d/20-beat.ini",
        """
        [watcher:beat]
        cmd = celery beat
        singleton = true
        """,
    )
    write(
        tmp_path,
        "etc/circus/local.ini",
        """
        [env:beat]
        APP_ROLE = scheduler
        """,
    )
    config = load(main, ENVIRON)
    envs = {w.name: w.env for w in config.watchers}
    assert envs == {
        "beat": {"APP_ENV": "production", "APP_ROLE": "scheduler"},
        "web": {"APP_ENV": "production", "APP_ROLE": "web"},
    }
    assert [s.name for s in config.sockets] == ["web"]
