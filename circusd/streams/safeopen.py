"""Opening output files without being tricked into writing someone else's.

The daemon runs as root and the files belong to the watcher's user, who
may control the directory they live in. So a file is never opened through
a symbolic link that user could have placed, a new file is created with
the user's ownership from the start, and an existing one must be a plain
file of that user (or of root, in a directory only root can change).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from circusd.users import Identity

_MAX_LINKS = 40  # symbolic links followed in one path, as the kernel allows
_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _trusted(directory: int) -> bool:
    """Only root (or circusd's own user) can change this directory's entries."""
    info = os.fstat(directory)
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & 0o022


def exists(name: str, directory: int) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def directory_fd(path: str) -> Iterator[int]:
    """An O_PATH descriptor of the directory ``path``, reached one component
    at a time. A symbolic link is followed only where it lies in a directory
    that only root can change, so no user can redirect the walk."""
    fd = os.open("/", _DIRECTORY_FLAGS)
    try:
        pending = [part for part in path.split("/") if part not in ("", ".")]
        links = 0
        while pending:
            part = pending.pop(0)
            try:
                following = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                target = _trusted_link(fd, part, path)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(
                        errno.ELOOP, "too many symbolic links", path
                    ) from None
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIRECTORY_FLAGS)
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            os.close(fd)
            fd = following
        yield fd
    finally:
        os.close(fd)


def _trusted_link(directory: int, name: str, path: str) -> str:
    """The target of the link ``name``, if it may be followed."""
    try:
        target = os.readlink(name, dir_fd=directory)
    except OSError:
        raise OSError(errno.ENOTDIR, "not a directory", path) from None
    if not _trusted(directory):
        raise OSError(
            errno.ELOOP,
            f"symbolic link {name!r} in a directory other users can change",
            path,
        )
    return target


def open_output(directory: int, name: str, owner: Identity, mode: int = 0o640) -> int:
    """Open ``name`` in ``directory`` for appending, never following a link.

    A new file gets ``owner``'s uid and gid and ``mode``. An existing file
    must be a regular file with one link, owned by ``owner`` or, in a
    directory only root can change, by root: never someone else's file that
    the daemon would be tricked into writing.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=directory)
    except FileExistsError:
        fd = os.open(name, flags, dir_fd=directory)
        try:
            _check_existing(fd, directory, name, owner)
        except OSError:
            os.close(fd)
            raise
    else:
        try:
            _give(fd, owner, mode)
        except OSError:
            os.close(fd)
            raise
    os.set_blocking(fd, True)
    return fd


def _give(fd: int, owner: Identity, mode: int) -> None:
    uid = -1 if owner.uid is None else owner.uid
    gid = -1 if owner.gid is None else owner.gid
    if (uid, gid) != (-1, -1) and os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def _check_existing(fd: int, directory: int, name: str, owner: Identity) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", name)
    if info.st_nlink != 1:
        raise OSError(errno.EMLINK, "the file has other hard links", name)
    expected = os.geteuid() if owner.uid is None else owner.uid
    if info.st_uid == expected:
        return
    if info.st_uid in (0, os.geteuid()) and _trusted(directory):
        return
    raise OSError(
        errno.EPERM, f"the file belongs to uid {info.st_uid}, not {expected}", name
    )
