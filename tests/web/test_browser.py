"""The console in a real browser: headless Chromium driven by Selenium
through Debian's chromedriver, reaching nothing but loopback.

Each step leaves a screenshot in test-artifacts/browser/ (the path is
printed at the end of the run).
"""

from __future__ import annotations

import http.server
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.web.conftest import ARTIFACTS, PASSWORD, Reader

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 15.0
BUSY = """
import time
while True:
    start = time.monotonic()
    while time.monotonic() - start < 0.1:
        pass
    time.sleep(0.4)
"""


@pytest.fixture
def browser(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never downloads
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 127.0.0.2",
        f"--user-data-dir={workdir / 'chromium'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def until(driver: Any, script: str, what: str) -> Any:
    """Wait until a script run in the page returns something true."""
    return wait_for(lambda: driver.execute_script(script), WAIT, what)


def press(driver: Any, selector: str, by: str = "css selector") -> None:
    """Click something that a live update may replace between find and click
    (a stale element never received the click, so trying again is safe)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def click() -> bool:
        try:
            driver.find_element(by, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(click, WAIT, f"a click on {selector}")


def log_in(driver: Any, url: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "section.login button").click()
    wait_for(lambda: driver.current_url == url + "/", WAIT, "the watchers page")
    until(driver, "return document.getElementById('live').dataset.state == 'live'",
          "the live stream")  # fmt: skip


def page_problems(driver: Any) -> list[str]:
    """Script errors and Content-Security-Policy violations the page hit."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
        or "Uncaught" in entry["message"]
    ]


def foreign_resources(driver: Any, url: str) -> list[str]:
    """What the page loaded from anywhere but the console itself."""
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return [name for name in loaded if not name.startswith(url + "/")]


# How much of a canvas its lines cover (pixels not transparent).
DRAWN = """
const canvas = document.querySelector(arguments[0]);
const context = canvas.getContext('2d');
const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
let drawn = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
return {points: Number(canvas.dataset.points || 0), drawn: drawn};
"""


@pytest.fixture
def daemon(start_daemon, workdir: Path, request: pytest.FixtureRequest):
    (workdir / "busy.py").write_text(BUSY)
    owner = ""
    if os.geteuid() == 0:
        owner = f"endpoint_owner = {request.getfixturevalue('test_user').name}\n"
    return start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        f"stats_endpoint = ipc://{workdir}/stats.sock\n{owner}\n"
        "[watcher:web]\ncmd = sleep 300\nnumprocesses = 2\n\n"
        f"[watcher:busy]\ncmd = {sys.executable} {workdir}/busy.py\n"
    )


def test_log_in_stop_a_watcher_see_a_chart_log_out(
    browser, start_console, daemon, operator
) -> None:
    from selenium.webdriver.common.by import By

    url = start_console(daemon, operator).url
    browser.get(url + "/")
    assert browser.current_url.startswith(url + "/login")
    assert browser.title == "Log in · circusd"
    shot(browser, "01-login")

    log_in(browser, url, "alice", PASSWORD)
    rows = browser.find_elements(By.CSS_SELECTOR, "#watchers tr[data-watcher]")
    assert [row.get_attribute("data-watcher") for row in rows] == ["busy", "web"]
    shot(browser, "02-watchers")
    assert foreign_resources(browser, url) == []

    # Stop `web` and see its state change, with no page load in between.
    browser.execute_script("window.sameDocument = true")
    press(browser, 'tr[data-watcher="web"] button[data-action="stop"]')
    until(browser, "const s = document.querySelector('tr[data-watcher=\"web\"] "
          ".status'); return s && s.dataset.status == 'stopped'",
          "web to show as stopped")  # fmt: skip
    assert browser.execute_script("return window.sameDocument") is True
    # The answer to the POST may come after the event that changed the row.
    notice = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#notice p"),
                      WAIT, "the answer to stop")[0].text  # fmt: skip
    assert notice == "circusd accepted stop on web"
    assert daemon.call("status", name="web")["status"] == "stopped"
    web_row = browser.find_element(By.CSS_SELECTOR, 'tr[data-watcher="web"]').text
    assert "0 / 2" in web_row
    shot(browser, "03-stopped-live")

    # A chart drawn from the statistics stream, live.
    press(browser, "busy", By.LINK_TEXT)
    until(browser, "return document.querySelector('#chart') && "
          "Number(document.querySelector('#chart').dataset.points) >= 3",
          "three live samples on the chart")  # fmt: skip
    first = browser.execute_script(DRAWN, "#chart")
    assert first["drawn"] > 300, first
    time.sleep(1.5)
    later = browser.execute_script(DRAWN, "#chart")
    assert later["points"] > first["points"]  # it keeps drawing as data comes
    spark = browser.execute_script(DRAWN, "#processes canvas.spark")
    assert spark["points"] >= 2 and spark["drawn"] > 50, spark
    cpu = browser.find_element(By.CSS_SELECTOR, '#summary [data-field="cpu"]').text
    assert cpu.endswith("%") and cpu != "–"
    shot(browser, "04-chart")
    assert foreign_resources(browser, url) == []

    assert page_problems(browser) == []
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_for(lambda: "/login" in browser.current_url, WAIT, "the login page")
    browser.get(url + "/")
    assert browser.current_url.startswith(url + "/login")
    shot(browser, "05-logged-out")


class AttackerSite:
    """A page on another site (127.0.0.2 is not 127.0.0.1 to a browser) whose
    form posts to the console as soon as it loads, as a hostile page would."""

    def __init__(self, target: str) -> None:
        page = (
            "<!doctype html><title>cute cats</title>"
            f'<form id="f" method="post" action="{target}">'
            '<input type="hidden" name="back" value="/"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_a_cross_site_form_post_from_another_page_is_refused(
    browser, start_console, daemon, operator
) -> None:
    console = start_console(daemon, operator)
    browser.get(console.url + "/login")
    log_in(browser, console.url, "alice", PASSWORD)
    attacker = AttackerSite(console.url + "/watchers/web/stop")
    try:
        browser.get(attacker.url)
        wait_for(lambda: browser.current_url.startswith(console.url), WAIT,
                 "the hostile form to post to the console")  # fmt: skip
        until(browser, "return document.readyState == 'complete'", "the answer")
    finally:
        attacker.close()
    assert browser.current_url == console.url + "/watchers/web/stop"
    assert browser.title == "Refused · circusd"
    refused = browser.find_element("css selector", "p.refused").text
    assert refused == "cross-site request refused (Sec-Fetch-Site: cross-site)"
    shot(browser, "06-cross-site-refused")
    assert daemon.call("status", name="web")["status"] == "active"
    assert len(daemon.pids("web")) == 2
    assert "reason='cross-site request refused" in console.output()


@pytest.mark.root
def test_a_read_only_console_shows_the_refusal(
    browser, start_daemon, start_console, workdir: Path, reader: Reader
) -> None:
    from selenium.webdriver.common.by import By

    daemon = start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        f"readonly_group = {reader.group}\n\n[watcher:web]\ncmd = sleep 300\n"
    )
    url = start_console(daemon, reader).url
    browser.get(url + "/login")
    log_in(browser, url, "alice", PASSWORD)
    press(browser, 'tr[data-watcher="web"] button[data-action="stop"]')
    refusal = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#notice p.notice-refused"),
        WAIT,
        "the refusal",
    )[0]
    assert refusal.is_displayed()
    assert refusal.get_attribute("role") == "alert"
    assert refusal.text.startswith("circusd refused stop on web: permission denied:")
    assert reader.name in refusal.text
    status = browser.find_element(By.CSS_SELECTOR, 'tr[data-watcher="web"] .status')
    assert status.text == "active"
    shot(browser, "07-read-only-refusal")
    assert daemon.call("status", name="web")["status"] == "active"
