"""Stopping the daemon through the protocol."""

from tests.conftest import call


def test_quit_waiting_always_gets_its_reply(start_daemon):
    for _ in range(5):
        daemon = start_daemon("""
            [watcher:w]
            cmd = sleep 300
            numprocesses = 2
            """)
        pids = daemon.pids("w")
        reply = call(daemon.endpoint, "quit", timeout=10, waiting=True)
        assert reply["status"] == "ok"
        assert daemon.wait_exit(10) == 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    assert handle.read().split(")")[1].split()[0] == "Z"
            except FileNotFoundError:
                pass
