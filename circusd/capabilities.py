"""circusd's own capabilities: keep only what a supervisor uses.

A root circusd needs to change identities (setuid, setgid, setpcap for a
child's bounding set), own and open files and sockets for its watchers
(chown, dac_override, dac_read_search, fowner), signal them (kill), bind low
ports (net_bind_service), set their limits (sys_resource) and read their
/proc entries (sys_ptrace). Everything else (loading modules, raw I/O, the
clock, mounting, rebooting...) is dropped from its effective set at start,
so no system call circusd makes can use it.

The permitted set is kept. A watcher that runs as root gets the bounding
set as its capabilities when it execs; if that were more than circusd's
permitted set, the kernel would count the exec as a gain of privilege,
clear the child's parent-death signal (``pdeathsig``, which every plugin
relies on) and make it undumpable. The bounding set and the inheritable set
are left alone too, so the drop changes nothing for watchers.
Tighten those per watcher with ``capability_bounding_set``, or for the whole
service with the unit's CapabilityBoundingSet=.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

NEEDED = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "kill",
    "net_bind_service",
    "setgid",
    "setpcap",
    "setuid",
    "sys_ptrace",
    "sys_resource",
)


def drop_unneeded() -> tuple[str, ...]:
    """Limit the effective set to NEEDED; return what is kept.

    Does nothing for a circusd that is not root (it has nothing to drop).
    """
    if os.geteuid() != 0:
        return ()
    import prctl  # python-prctl

    kept = tuple(name for name in NEEDED if getattr(prctl.cap_permitted, name))
    prctl.cap_effective.limit(*kept)
    log.debug("capabilities limited kept=%s", ",".join(kept))
    return kept
