"""The console's HTML, rendered on the server.

Every value is escaped here; the pages carry no inline script or style (the
Content-Security-Policy forbids both), only data attributes that
``static/console.js`` reads. Parts that change live (the watcher rows, a
watcher's summary and its process rows) are separate functions, so the
same code renders them for the page and for the live updates.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import quote, urlencode

from circusd.web.model import Model, ProcessView, WatcherView
from circusd.web.sessions import Session

ACTIONS = ("start", "stop", "restart", "reload", "incr", "decr")
ACTION_LABELS = {
    "start": "Start",
    "stop": "Stop",
    "restart": "Restart",
    "reload": "Reload",
    "incr": "+1",
    "decr": "−1",
}
ACTION_TITLES = {
    "incr": "Add one process",
    "decr": "Remove one process",
    "reload": "Graceful reload: new processes first, then the old ones stop",
}
SIGNALS = ("HUP", "TERM", "INT", "QUIT", "KILL", "USR1", "USR2", "CONT", "STOP",
           "WINCH", "TTIN", "TTOU")  # fmt: skip


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def watcher_url(name: str) -> str:
    return "/watchers/" + quote(name, safe="")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


def human_size(count: float | None) -> str:
    if count is None:
        return "–"
    for unit in ("B", "K", "M", "G"):
        if count < 1024:
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    return f"{count:.1f}T"


def memory(rss: float | None, mem: float | None) -> str:
    """Resident size, with the share of the host's memory."""
    if rss is None:
        return percent(mem)
    return human_size(rss) if mem is None else f"{human_size(rss)} ({mem:.1f} %)"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _join(parts: Iterable[str]) -> str:
    return "".join(parts)


# -- the frame ----------------------------------------------------------------------


def layout(
    title: str,
    body: str,
    *,
    session: Session | None = None,
    events: str | None = None,
    notices: Iterable[tuple[str, str]] = (),
    problem: str | None = None,
    asset_version: str = "",
) -> str:
    version = f"?v={e(asset_version)}" if asset_version else ""
    events_attr = f' data-events="{e(events)}"' if events else ""
    header = ""
    if session is not None and session.user is not None:
        header = (
            '<span class="live" id="live" data-state="connecting">connecting…</span>'
            f'<span class="who">{e(session.user)} · {e(session.role)}</span>'
            '<form method="post" action="/logout" class="logout">'
            f'{csrf_field(session)}<button type="submit">Log out</button></form>'
        )
    notice_html = _join(
        f'<p class="notice-{e(kind)}">{e(text)}</p>' for kind, text in notices
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · circusd</title>"
        f'<link rel="stylesheet" href="/static/console.css{version}">'
        f'<link rel="icon" href="/static/icon.svg{version}" type="image/svg+xml">'
        f'<script src="/static/console.js{version}" defer></script>'
        f"</head><body{events_attr}>"
        '<header class="top"><a class="brand" href="/">'
        f'<img src="/static/icon.svg{version}" alt="" width="22" height="22">'
        "circusd</a>"
        f"{header}</header>"
        f'<div id="problem" class="problem" role="alert">{problem_text(problem)}</div>'
        f'<div id="notice" class="notice" role="status" aria-live="polite">'
        f"{notice_html}</div>"
        f"<main>{body}</main></body></html>\n"
    )


def problem_text(problem: str | None) -> str:
    return "" if problem is None else f"<p>circusd is not answering: {e(problem)}</p>"


def csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'


# -- login --------------------------------------------------------------------------


def login_page(session: Session, message: str | None, next_path: str) -> str:
    error = f'<p class="login-error" role="alert">{e(message)}</p>' if message else ""
    body = (
        '<section class="login"><h1>Log in</h1>'
        f"{error}"
        '<form method="post" action="/login">'
        f"{csrf_field(session)}"
        f'<input type="hidden" name="next" value="{e(next_path)}">'
        '<label>User <input name="username" autocomplete="username" required '
        'autofocus maxlength="64"></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required maxlength="1024"></label>'
        '<button type="submit">Log in</button></form></section>'
    )
    return layout("Log in", body)


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path})


# -- actions ------------------------------------------------------------------------


def action_forms(view: WatcherView, session: Session, back: str) -> str:
    if session.role != "operate":
        return '<span class="muted">read-only</span>'
    forms = []
    for action in ACTIONS:
        title = ACTION_TITLES.get(action, f"{action.capitalize()} {view.name}")
        forms.append(
            f'<form method="post" action="{e(watcher_url(view.name))}/{action}" '
            f'class="action">{csrf_field(session)}'
            f'<input type="hidden" name="back" value="{e(back)}">'
            f'<button type="submit" '
            f'data-action="{action}" title="{e(title)}">'
            f"{ACTION_LABELS[action]}</button></form>"
        )
    return f'<div class="actions">{_join(forms)}</div>'


def signal_form(view: WatcherView, session: Session) -> str:
    if session.role != "operate":
        return ""
    options = _join(f'<option value="{s}">SIG{s}</option>' for s in SIGNALS)
    back = watcher_url(view.name)
    return (
        f'<form method="post" action="{e(back)}/signal" class="action signal">'
        f"{csrf_field(session)}"
        f'<input type="hidden" name="back" value="{e(back)}">'
        f'<label>Signal <select name="signum">{options}</select></label>'
        '<label>to pid <input name="pid" inputmode="numeric" pattern="[0-9]*" '
        'placeholder="every process" size="12"></label>'
        '<button type="submit" data-action="signal">Send</button></form>'
    )


# -- the overview -------------------------------------------------------------------


def status_badge(view: WatcherView) -> str:
    title = f' title="{e(view.reason)}"' if view.reason else ""
    reason = f'<span class="reason">{e(view.reason)}</span>' if view.reason else ""
    return (
        f'<span class="status status-{e(view.status)}" data-status="{e(view.status)}"'
        f"{title}>{e(view.status)}</span>{reason}"
    )


def counts(view: WatcherView) -> str:
    target = "?" if view.target is None else str(view.target)
    return f"{len(view.processes)} / {target}"


def watcher_rows(model: Model, session: Session) -> str:
    if not model.watchers:
        return '<tr><td colspan="7" class="muted">No watchers.</td></tr>'
    rows = []
    for view in model.watchers.values():
        series = e(view.name)
        rows.append(
            f'<tr data-watcher="{series}">'
            f'<td><a href="{e(watcher_url(view.name))}">{e(view.name)}</a></td>'
            f"<td>{status_badge(view)}</td>"
            f'<td class="num">{counts(view)}</td>'
            f'<td class="num" data-series="{series}" data-field="cpu">'
            f"{percent(view.cpu)}</td>"
            f'<td class="num" data-series="{series}" data-field="mem">'
            f"{memory(view.rss, view.mem)}</td>"
            f'<td><canvas class="spark" data-chart="{series}" width="160" '
            'height="36" role="img" aria-label="CPU and memory, last minutes">'
            "</canvas></td>"
            f"<td>{action_forms(view, session, '/')}</td></tr>"
        )
    return _join(rows)


def overview(model: Model, session: Session, asset_version: str) -> str:
    body = (
        '<h1>Watchers</h1><p class="legend"><span class="key-cpu">CPU</span> '
        '<span class="key-mem">resident memory</span> '
        f"{stats_note(model)}</p>"
        '<table class="watchers"><thead><tr><th>Watcher</th><th>Status</th>'
        '<th class="num">Processes</th><th class="num">CPU</th>'
        '<th class="num">Memory</th><th>Last minutes</th><th>Actions</th>'
        f'</tr></thead><tbody id="watchers">{watcher_rows(model, session)}'
        "</tbody></table>"
    )
    return layout(
        "Watchers",
        body,
        session=session,
        events="/events",
        notices=session.notices,
        problem=model.problem,
        asset_version=asset_version,
    )


def stats_note(model: Model) -> str:
    if model.stats_stream:
        return ""
    return (
        '<span class="muted">(no statistics stream: charts need statsd = true '
        "in circusd's [circus] section)</span>"
    )


# -- one watcher ------------------------------------------------------------------


def summary(view: WatcherView, session: Session) -> str:
    back = watcher_url(view.name)
    return (
        f'<h1>Watcher <span class="name">{e(view.name)}</span> '
        f"{status_badge(view)}</h1>"
        '<dl class="facts">'
        f'<dt>Processes</dt><dd class="num">{counts(view)}</dd>'
        f'<dt>CPU</dt><dd class="num" data-series="{e(view.name)}" data-field="cpu">'
        f"{percent(view.cpu)}</dd>"
        f'<dt>Memory</dt><dd class="num" data-series="{e(view.name)}" '
        f'data-field="mem">{memory(view.rss, view.mem)}</dd></dl>'
        f"{action_forms(view, session, back)}"
    )


def process_row(view: WatcherView, process: ProcessView, now: float) -> str:
    series = e(f"{view.name}/{process.pid}")
    wid = "–" if process.wid is None else str(process.wid)
    return (
        f'<tr data-pid="{process.pid}"><td class="num">{process.pid}</td>'
        f'<td class="num">{wid}</td><td>{user(process)}</td>'
        f'<td class="num" data-series="{series}" data-field="cpu">'
        f"{percent(process.cpu)}</td>"
        f'<td class="num" data-series="{series}" data-field="mem">'
        f"{memory(process.rss, process.mem)}</td>"
        f'<td class="num" data-series="{series}" data-field="age">'
        f"{duration(process.age_now(now))}</td>"
        f'<td><canvas class="spark" data-chart="{series}" width="160" height="36" '
        'role="img" aria-label="CPU and memory of this process"></canvas></td></tr>'
    )


def user(process: ProcessView) -> str:
    """``www-data (33)``: the name and the uid, or what is known of them."""
    name = e(process.user or "–")
    if process.uid is None or process.user == str(process.uid):
        return name
    return f'{name} <span class="muted">({process.uid})</span>'


def process_rows(view: WatcherView, now: float) -> str:
    if not view.processes:
        return '<tr><td colspan="7" class="muted">No processes.</td></tr>'
    return _join(process_row(view, p, now) for p in view.processes.values())


def watcher_page(
    model: Model, view: WatcherView, session: Session, asset_version: str
) -> str:
    now = model.clock()
    body = (
        f'<p class="crumbs"><a href="/">All watchers</a></p>'
        f'<section id="summary">{summary(view, session)}</section>'
        f"{signal_form(view, session)}"
        '<h2>CPU and memory</h2><p class="legend"><span class="key-cpu">CPU % '
        '(left axis)</span> <span class="key-mem">resident memory (right axis)'
        f"</span> {stats_note(model)}</p>"
        f'<canvas class="chart" id="chart" data-chart="{e(view.name)}" width="760" '
        'height="220" role="img" aria-label="CPU and memory of this watcher">'
        "</canvas>"
        '<h2>Processes</h2><table class="processes"><thead><tr>'
        '<th class="num">PID</th><th class="num">WID</th><th>User (uid)</th>'
        '<th class="num">CPU</th><th class="num">Memory</th>'
        '<th class="num">Age</th><th>Last minutes</th></tr></thead>'
        f'<tbody id="processes">{process_rows(view, now)}</tbody></table>'
    )
    return layout(
        f"Watcher {view.name}",
        body,
        session=session,
        events="/events?" + urlencode({"watcher": view.name}),
        notices=session.notices,
        problem=model.problem,
        asset_version=asset_version,
    )


def not_found_page(name: str, session: Session, asset_version: str) -> str:
    body = f'<h1>No watcher {e(name)}</h1><p><a href="/">All watchers</a></p>'
    return layout("Not found", body, session=session, asset_version=asset_version)


def refused_page(text: str, asset_version: str) -> str:
    body = (
        f'<h1>Refused</h1><p class="refused">{e(text)}</p><p><a href="/">Back</a></p>'
    )
    return layout("Refused", body, asset_version=asset_version)
