"""circusd keeps only the capabilities a supervisor uses; its watchers are
not affected by that (a root watcher still gets the whole bounding set)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.security.conftest import proc_status

pytestmark = pytest.mark.root

CAP_SYS_ADMIN = 21
CAP_SETUID = 7
CAP_KILL = 5


def capabilities(pid: int, key: str) -> int:
    return int(proc_status(pid)[key], 16)


def test_circusd_drops_what_it_never_uses_but_root_watchers_keep_it(
    start_daemon, test_user
):
    daemon = start_daemon(f"""
        [watcher:rootly]
        cmd = sleep 300

        [watcher:user]
        cmd = sleep 300
        uid = {test_user.name}
        """)
    own = capabilities(daemon.process.pid, "CapEff")
    assert not own & (1 << CAP_SYS_ADMIN)
    assert own & (1 << CAP_SETUID) and own & (1 << CAP_KILL)
    # The permitted set stays whole: see the next test.
    assert capabilities(daemon.process.pid, "CapPrm") & (1 << CAP_SYS_ADMIN)

    bounding = capabilities(daemon.process.pid, "CapBnd")
    (root_child,) = wait_for(lambda: daemon.pids("rootly"), what="root watcher")
    assert capabilities(root_child, "CapEff") == bounding
    (user_child,) = wait_for(lambda: daemon.pids("user"), what="user watcher")
    assert capabilities(user_child, "CapEff") == 0
    assert proc_status(user_child)["Uid"].split()[0] == str(test_user.uid)
