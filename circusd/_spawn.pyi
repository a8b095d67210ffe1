"""circusd._spawn, the C module that starts a child (see _spawn.c)."""

from collections.abc import Sequence

def spawn(
    program: bytes,
    argv: Sequence[bytes],
    envp: Sequence[bytes],
    cwd: bytes,
    stdio: Sequence[int],
    keep_fds: Sequence[int],
    umask: int,
    rlimits: Sequence[tuple[int, int, int]],
    drop_caps: Sequence[int],
    groups: Sequence[int] | None,
    gid: int,
    uid: int,
    no_new_privs: bool,
    pdeathsig: int,
    /,
) -> int: ...
