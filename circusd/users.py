"""Who a child runs as: resolving a watcher's uid and gid to a full identity."""

from __future__ import annotations

import grp
import os
import pwd
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
        number = group_id(gid) if gid is not None else None
        if number is None:
            raise ValueProblem(
                f"uid {user} has no passwd entry, so a gid must be given too"
            )
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
