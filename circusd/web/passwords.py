"""The console's users: a file of scrypt password hashes the operator manages.

One user per line, ``NAME:ROLE:HASH``; ``#`` starts a comment. ROLE is
``operate`` (may ask circusd for actions; circusd's policy still decides)
or ``read`` (the console refuses every action itself). HASH is
``scrypt$N$R$P$SALT$KEY`` with base64 salt and key, so the cost can be raised
later without breaking old lines.

The file is read again whenever it changes (its inode, size or mtime), so
``circushttpd adduser`` and ``deluser`` take effect without a restart, and a
session whose user was removed or whose password changed ends at its next
request.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass

from circusd.errors import CircusdError

# About 0.1 s and 32 MiB per hash on a small server.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_COST = 2**20  # refuse lines that would make one login take minutes
_KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class UsersFileError(CircusdError):
    """The users file cannot be read or has a malformed line."""


class Role(enum.StrEnum):
    OPERATE = "operate"
    READ = "read"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    hash: str


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsersFileError(
            f"invalid user name {name!r}: expected 1 to 64 letters, digits, "
            "'_', '.', '@' or '-', not starting with '.', '@' or '-'"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(
            f"password too short: {len(password)} characters, at least "
            f"{MIN_PASSWORD} needed"
        )
    if len(password) > MAX_PASSWORD:
        raise UsersFileError(f"password too long: more than {MAX_PASSWORD} characters")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=2 * 128 * n * r * p + 1024 * 1024,
        dklen=_KEY_BYTES,
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    encoded = [base64.b64encode(part).decode() for part in (salt, key)]
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), *encoded])


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$R$P$SALT$KEY")
    n, r, p = (int(part) for part in parts[1:4])
    if n < 2 or n & (n - 1) or n > _MAX_COST or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    salt, key = (base64.b64decode(part, validate=True) for part in parts[4:])
    if len(key) != _KEY_BYTES or not salt:
        raise ValueError("salt or key of the wrong size")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; constant time in the key."""
    try:
        n, r, p, salt, key = _parse_hash(stored)
    except ValueError:
        return False
    if len(password) > MAX_PASSWORD:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


@functools.cache
def _decoy() -> str:
    """A hash of nothing anyone knows: checking an unknown user's password
    costs as much as a known one's, so timing does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def check_login(user: User | None, password: str) -> bool:
    if user is None:
        verify_password(password, _decoy())
        return False
    return verify_password(password, user.hash)


# -- the file ---------------------------------------------------------------------


def parse_users(text: str, path: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise UsersFileError(f"{where}: expected NAME:ROLE:HASH")
        name, role, hashed = fields
        try:
            check_name(name)
            parsed_role = Role(role)
            _parse_hash(hashed)
        except UsersFileError as exc:
            raise UsersFileError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise UsersFileError(f"{where}: invalid role or hash: {exc}") from None
        if name in users:
            raise UsersFileError(f"{where}: user {name!r} appears twice")
        users[name] = User(name, parsed_role, hashed)
    return users


def format_users(users: dict[str, User]) -> str:
    header = "# circushttpd users: NAME:ROLE:HASH (edit with circushttpd adduser)\n"
    lines = [f"{u.name}:{u.role.value}:{u.hash}\n" for u in users.values()]
    return header + "".join(lines)


def _check_file_mode(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UsersFileError(f"users file {path} is not a regular file")
    if info.st_uid not in (0, os.geteuid()):
        raise UsersFileError(
            f"users file {path} belongs to uid {info.st_uid}, who could add "
            "themselves; it must belong to root or to circushttpd's own user "
            f"(uid {os.geteuid()})"
        )
    if info.st_mode & 0o022:
        raise UsersFileError(
            f"users file {path} ({stat.filemode(info.st_mode)}) may be changed "
            "by other users, who could add themselves; chmod go-w it"
        )


class UserStore:
    """The users file, read again when it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._users: dict[str, User] = {}
        self.load()

    def load(self) -> dict[str, User]:
        """The current users; raises UsersFileError if the file is unusable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise UsersFileError(
                f"cannot read users file {self.path}: {exc.strerror} "
                f"(circushttpd runs as uid {os.geteuid()})"
            ) from None
        with os.fdopen(fd, encoding="utf-8") as handle:
            info = os.fstat(handle.fileno())
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if stamp != self._stamp:
                _check_file_mode(self.path, info)
                self._users = parse_users(handle.read(), self.path)
                self._stamp = stamp
        return self._users

    def get(self, name: str) -> User | None:
        return self.load().get(name)


def update_users(
    path: str,
    name: str,
    *,
    password: str | None = None,
    role: Role = Role.OPERATE,
    replace: bool = False,
    remove: bool = False,
) -> None:
    """Add, replace or remove one user, writing the file atomically.

    A new file is made mode 0640; an existing one keeps its owner, group and
    mode, so the console (often in the file's group) can still read it.
    """
    check_name(name)
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    users: dict[str, User] = {}
    if info is not None:
        with open(path, encoding="utf-8") as handle:
            users = parse_users(handle.read(), path)
    if remove:
        if name not in users:
            raise UsersFileError(f"no user {name!r} in {path}")
        del users[name]
    else:
        if name in users and not replace:
            raise UsersFileError(
                f"user {name!r} already exists in {path}; use --replace to "
                "change the password or role"
            )
        assert password is not None
        users[name] = User(name, role, hash_password(check_password(password)))
    _write_atomically(path, format_users(users), info)


def _write_atomically(path: str, text: str, info: os.stat_result | None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".users-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            if info is None:
                os.fchmod(handle.fileno(), 0o640)
            else:
                os.fchmod(handle.fileno(), stat.S_IMODE(info.st_mode))
                os.fchown(handle.fileno(), info.st_uid, info.st_gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
