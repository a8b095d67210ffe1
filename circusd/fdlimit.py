"""circusd's own open-files limit, raised when it runs short.

Each process whose output circusd carries costs it one descriptor per
captured stream, so a few hundred processes can reach the usual soft
limit of 1024. Descriptors are numbered from the lowest free one, so a
new descriptor's number tells how many are open: when one reaches three
quarters of the soft limit, the soft limit is doubled, up to the hard
limit (raising the hard limit needs CAP_SYS_RESOURCE, which circusd does
not assume). Processes started afterwards inherit the raised soft limit;
a watcher that needs a lower one sets ``rlimit_nofile``.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_warned = False


def make_room(fd: int) -> None:
    """Called with each new long-lived descriptor."""
    global _soft, _hard, _warned
    if fd < _soft * 3 // 4:
        return
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if fd < _soft * 3 // 4:
        return  # raised meanwhile (by rlimit changes elsewhere)
    wanted = _soft * 2 if _hard == resource.RLIM_INFINITY else min(_soft * 2, _hard)
    if wanted > _soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, _hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "cannot raise the open files limit soft=%d error=%s", _soft, exc
            )
        else:
            log.info(
                "raised the open files limit soft=%d hard=%d was=%d",
                wanted,
                _hard,
                _soft,
            )
            _soft = wanted
            return
    if not _warned:
        _warned = True
        log.warning(
            "open files near the limit open=%d limit=%d (raise LimitNOFILE= "
            "of circusd's unit)",
            fd,
            _hard,
        )
