"""Who a child runs as: resolving a watcher's uid and gid to a full identity."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from circusd.errors import ValueProblem


@dataclass(frozen=True)
class Identity:
    """The exact identity a child gets. ``None`` fields mean "keep circusd's"."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    name: str | None = None
    home: str | None = None
    shell: str | None = None

    @property
    def changes(self) -> bool:
        return self.uid is not None or self.gid is not None


KEEP = Identity(None, None, None)


def _user(value: str | int) -> pwd.struct_passwd | int:
    try:
        if isinstance(value, int):
            return pwd.getpwuid(value)
        return pwd.getpwnam(value)
    except KeyError:
        if isinstance(value, int):
            return value  # a numeric uid without a passwd entry is allowed
        raise ValueProblem(f"unknown user {value!r}") from None


def group_id(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueProblem(f"unknown group {value!r}") from None


def resolve(uid: str | int | None, gid: str | int | None) -> Identity:
    """The identity for a watcher's ``uid``/``gid`` options.

    0 is a value, never "unset". A uid alone takes the user's primary group,
    and the supplementary groups are always exactly the user's own (or just
    the gid when no user is named), never circusd's.
    """
    if uid is None and gid is None:
        return KEEP
    if uid is None:
        assert gid is not None
        number = group_id(gid)
        return Identity(None, number, (number,))
    user = _user(uid)
    if isinstance(user, int):
        if gid is None:
            raise ValueProblem(
                f"uid {user} has no passwd entry, so a gid must be given too"
            )
        number = group_id(gid)
        return Identity(user, number, (number,))
    number = group_id(gid) if gid is not None else user.pw_gid
    groups = os.getgrouplist(user.pw_name, number)
    return Identity(
        user.pw_uid,
        number,
        tuple(dict.fromkeys(groups)),
        user.pw_name,
        user.pw_dir,
        user.pw_shell,
    )


def user_environment(identity: Identity) -> dict[str, str]:
    """HOME, USER, LOGNAME and SHELL for the target user."""
    if identity.name is None:
        return {}
    return {
        "HOME": identity.home or "/",
        "USER": identity.name,
        "LOGNAME": identity.name,
        "SHELL": identity.shell or "/bin/sh",
    }


# -- what a user could do to a path itself ------------------------------------
#
# os.access() answers for circusd's own uid only, so these read the mode bits
# of each directory on the way. They do not read ACLs: a directory that an
# ACL opens to the user but its mode bits do not is refused (a safe mistake).

_READ, _WRITE, _SEARCH = 4, 2, 1


def _allows(info: os.stat_result, identity: Identity, bit: int) -> bool:
    if identity.uid is None or identity.uid == 0:
        return True
    if info.st_uid == identity.uid:
        return bool(info.st_mode >> 6 & bit)
    if info.st_gid in (identity.groups or ()) or info.st_gid == identity.gid:
        return bool(info.st_mode >> 3 & bit)
    return bool(info.st_mode & bit)


def _who(identity: Identity) -> str:
    return identity.name or f"uid {identity.uid}"


def _describe(path: str, info: os.stat_result) -> str:
    return f"{path} (mode {info.st_mode & 0o7777:04o}, owner uid {info.st_uid})"


def _search_problem(identity: Identity, path: str) -> str | None:
    """Why the user could not reach the entries of ``path`` (None: it could)."""
    absolute = os.path.abspath(path)
    prefixes = {absolute, os.path.realpath(absolute)}
    for full in list(prefixes):
        parts = full.split("/")
        prefixes.update("/".join(parts[:i]) or "/" for i in range(1, len(parts)))
    for prefix in sorted(prefixes, key=len):
        try:
            info = os.stat(prefix)
        except OSError as exc:
            return f"{prefix}: {exc.strerror}"
        if not stat.S_ISDIR(info.st_mode):
            return f"{prefix} is not a directory"
        if not _allows(info, identity, _SEARCH):
            return f"{_who(identity)} may not enter {_describe(prefix, info)}"
    return None


def may_execute(identity: Identity, path: str) -> bool:
    """Whether the user may execute the regular file ``path`` by its mode
    (what execvp's search of PATH finds out by trying)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    if identity.uid is None:
        return os.access(path, os.X_OK)
    if identity.uid == 0:
        return bool(info.st_mode & 0o111)
    return _allows(info, identity, _SEARCH)  # the execute bit


def enter_problem(identity: Identity, path: str) -> str | None:
    """Why the user could not use ``path`` as its working directory."""
    return _search_problem(identity, path)


def write_problem(identity: Identity, path: str) -> str | None:
    """Why the user could not open ``path`` for appending, creating it if
    needed, itself (None: it could)."""
    directory = os.path.dirname(os.path.abspath(path))
    problem = _search_problem(identity, directory)
    if problem is not None:
        return problem
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        parent = os.stat(directory)
        if _allows(parent, identity, _WRITE):
            return None
        return (
            f"{_who(identity)} may not create files in {_describe(directory, parent)}"
        )
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link"
    if _allows(info, identity, _WRITE):
        return None
    return f"{_who(identity)} may not write {_describe(path, info)}"


def groups_of(uid: int, gid: int | None = None) -> set[int]:
    """Every group a user belongs to in the user database, and ``gid``."""
    found = {gid} if gid is not None else set()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return found
    found.update(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return found
