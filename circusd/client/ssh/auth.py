"""Logging in to one SSH server: public keys, keyboard-interactive, password.

The host's methods (ssh_config's PreferredAuthentications, less those turned
off) are tried in order, among those the server allows: every key (the
explicit one, the agent's, the IdentityFile ones), then keyboard-interactive
and password, each asked on the terminal through an ``Asker`` up to
NumberOfPasswordPrompts times. Without a terminal, or without an Asker,
those two are skipped and the failure says why. A partial success (the
server wants one more factor) goes on with the methods left.

Keys are offered straight away. The server is asked which methods it allows
(a "none" request, with which OpenSSH starts) only before a method that asks
a person, or to explain a failure: sshd answers "none" after a deliberate
delay, about 8 ms here, which would otherwise add a third to every login.

Time spent on the questions, and waiting for the server's verdict on the
answers, does not count against the set-up's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Protocol

import paramiko

from circusd.client.ssh.errors import AuthenticationFailed, NoTerminal
from circusd.client.ssh.keys import AgentKeys, Identity, KeyRing, public_blob
from circusd.client.ssh.target import HostSettings

logger = logging.getLogger(__name__)

_NETWORK_ERRORS = (paramiko.SSHException, EOFError, OSError)


class Asker(Protocol):
    """Asks a person: a password (``echo`` False) or another answer."""

    def ask(self, question: str, echo: bool) -> str:
        """The answer, without its line end; raises NoTerminal."""
        ...

    def can_ask(self) -> bool:
        """Whether there is a terminal to ask on."""
        ...


class Deadline:
    """A point in time that waiting for a person pushes back."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(self._end - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return time.monotonic() >= self._end

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self._end += time.monotonic() - started


class Login:
    """Authenticates ``transport`` as ``host.user``; ``run`` raises
    AuthenticationFailed (or an SSHError) with a one-line reason."""

    def __init__(
        self,
        label: str,
        host: HostSettings,
        transport: paramiko.Transport,
        keys: KeyRing,
        asker: Asker | None,
        deadline: Deadline,
    ) -> None:
        self.label = label
        self.host = host
        self.transport = transport
        self.keys = keys
        self.asker = asker
        self.deadline = deadline
        self.agents: list[AgentKeys] = []  # for the session to close
        self._offered: list[str] = []  # key sources, for the message
        self._outcomes: dict[str, str] = {}  # method -> why it did not work
        self._server_allows: list[str] | None = None  # once known
        self._no_terminal = False

    def run(self) -> None:
        for method in self.host.auth_methods:
            if self._allows(method):
                remaining = self._try(method)
                if remaining:  # partial success: another factor
                    self._server_allows = remaining
                    self._outcomes[method] = "accepted, but more factors were asked"
            if self.transport.is_authenticated():  # (also by "none")
                logger.debug("authenticated host=%s method=%s", self.where, method)
                return
        if self._server_allows is None:
            with contextlib.suppress(AuthenticationFailed):
                self._ask_allowed()  # only to say what the server allows
        raise self._failure()

    @property
    def where(self) -> str:
        return f"{self.host.user}@{self.host.address}"

    def _allows(self, method: str) -> bool:
        """Whether the server takes ``method``; keys are simply offered."""
        if self._server_allows is None and method != "publickey":
            self._ask_allowed()
        return self._server_allows is None or method in self._server_allows

    def _ask_allowed(self) -> None:
        try:
            none = partial(self.transport.auth_none, self.host.user)
            self._verdict(none, self.deadline.left())
        except paramiko.BadAuthenticationType as exc:
            self._server_allows = list(exc.allowed_types)
        except paramiko.AuthenticationException:
            self._server_allows = []
        except _NETWORK_ERRORS as exc:
            raise self._broken(exc) from None
        else:
            self._server_allows = []  # let in without a method

    def _try(self, method: str) -> list[str] | None:
        """Authenticate with ``method``: None when it failed, else what the
        server still asks for (nothing once authenticated)."""
        if method == "publickey":
            return self._public_keys()
        if self.asker is None or not self.asker.can_ask():
            self._outcomes[method] = "no terminal to ask on"
            return None
        # Once a person is asked, the set-up's clock stops, and the server's
        # verdict on an answer takes what it takes, as with OpenSSH: after a
        # wrong one it is slow on purpose (PAM: over 2 s), and its own
        # LoginGraceTime bounds it. Ctrl-C ends the wait.
        with self.deadline.paused():
            if method == "password":
                return self._password()
            return self._keyboard_interactive()

    # -- the methods --------------------------------------------------------

    def _public_keys(self) -> list[str] | None:
        for identity in self._identities():
            self._offered.append(identity.source)
            try:
                return self._verdict(
                    partial(
                        self.transport.auth_publickey, self.host.user, identity.key
                    ),
                    self.deadline.left(),
                )
            except paramiko.BadAuthenticationType as exc:
                self._offered.pop()
                self._server_allows = list(exc.allowed_types)
                return None
            except paramiko.AuthenticationException:
                continue
            except _NETWORK_ERRORS as exc:
                raise self._broken(exc) from None
        return None

    def _password(self) -> list[str] | None:
        question = f"{self._whom()}'s password: "
        for attempt in range(self.host.password_prompts):
            again = "Permission denied, please try again.\n" if attempt else ""
            password = self._ask(again + question, echo=False, method="password")
            if password is None:
                return None
            try:
                return self._verdict(
                    partial(
                        self.transport.auth_password,
                        self.host.user,
                        password,
                        fallback=False,
                    ),
                    None,  # see _try
                )
            except paramiko.BadAuthenticationType:
                return None
            except paramiko.AuthenticationException:
                self._outcomes["password"] = f"wrong password ({attempt + 1} attempts)"
            except _NETWORK_ERRORS as exc:
                raise self._broken(exc) from None
        return None

    def _keyboard_interactive(self) -> list[str] | None:
        for attempt in range(self.host.password_prompts):
            # The questions come in paramiko's thread while this one waits
            # for the outcome.
            self.transport.auth_timeout = None
            try:
                return list(
                    self.transport.auth_interactive(self.host.user, self._answer)
                )
            except paramiko.BadAuthenticationType:
                return None
            except paramiko.AuthenticationException:
                if self._no_terminal:
                    return None  # it went away while the server asked
                self._outcomes["keyboard-interactive"] = (
                    f"answers refused ({attempt + 1} attempts)"
                )
            except _NETWORK_ERRORS as exc:
                raise self._broken(exc) from None
        return None

    def _verdict(
        self, request: Callable[[], Sequence[str]], timeout: float | None
    ) -> list[str]:
        """What ``request`` (an auth_* call) returns; raises its
        AuthenticationException for a refusal, but AuthenticationFailed when
        no answer came in ``timeout`` seconds (None: as long as the server
        takes): the server's late answer would be taken for the answer to the
        next request."""
        self.transport.auth_timeout = timeout
        started = time.monotonic()
        try:
            return list(request())
        except paramiko.BadAuthenticationType:
            raise
        except paramiko.AuthenticationException:
            if timeout is None or time.monotonic() - started < timeout:
                raise
        raise AuthenticationFailed(
            f"{self.label}: Authentication failed for {self.where}: no answer "
            f"from the server within {timeout:g} s"
        )

    def _answer(
        self, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        """paramiko's handler: every prompt of one round, asked in turn."""
        heading = [text.strip() for text in (title, instructions) if text.strip()]
        answers = []
        for number, (prompt, echo) in enumerate(prompts):
            lines = heading if number == 0 else []
            question = "\n".join([*lines, f"({self._whom()}) {prompt}"])
            answer = self._ask(question, echo, "keyboard-interactive")
            answers.append(answer or "")
        return answers

    def _whom(self) -> str:
        """USER@HOST as OpenSSH's questions say it (no port)."""
        return f"{self.host.user}@{self.host.host_key_alias or self.host.hostname}"

    def _ask(self, question: str, echo: bool, method: str) -> str | None:
        assert self.asker is not None
        try:
            return self.asker.ask(question, echo)
        except NoTerminal:
            self._no_terminal = True
            self._outcomes[method] = "no terminal to ask on"
            return None

    # -- keys ---------------------------------------------------------------

    def _identities(self) -> Iterator[Identity]:
        """Keys to offer, each once, loading a key file only when its turn
        comes and only if its public key has not been offered already."""
        offered: set[bytes] = set()
        sources = [self.keys.explicit()]
        if not self.host.identities_only:
            agent = AgentKeys()
            self.agents.append(agent)
            sources.append(agent.identities())
        for identities in sources:
            for identity in identities:
                if identity.key.asbytes() not in offered:
                    offered.add(identity.key.asbytes())
                    yield identity
        for path in self.host.identity_files:
            if public_blob(path) in offered:
                continue
            for identity in self.keys.from_files([path]):
                if identity.key.asbytes() not in offered:
                    offered.add(identity.key.asbytes())
                    yield identity

    # -- failures -----------------------------------------------------------

    def _failure(self) -> AuthenticationFailed:
        clauses = [self._keys_clause(), *self._asked_clauses()]
        skipped = "; ".join(self.keys.skipped().values())
        if skipped:
            clauses.append(f"skipped: {skipped}")
        return AuthenticationFailed(
            f"{self.label}: Authentication failed for {self.where}: "
            + "; ".join(clause for clause in clauses if clause)
        )

    def _keys_clause(self) -> str:
        allows = self._server_allows or ["publickey"]  # unknown: keys were tried
        if "publickey" not in allows:
            listed = ", ".join(allows) or "nothing"
            return f"the server does not accept public keys (it allows {listed})"
        if "publickey" not in self.host.auth_methods:
            return "public keys are turned off in ssh_config"
        if self._offered:
            counted = _count(self._offered)
            return f"the server accepted none of the keys offered ({counted})"
        return "no key to offer (no --ssh-keyfile, ssh-agent or IdentityFile)"

    def _asked_clauses(self) -> list[str]:
        clauses = []
        for method in ("keyboard-interactive", "password"):
            if method not in (self._server_allows or ()):
                continue
            if method not in self.host.auth_methods:
                why = "turned off in ssh_config"
            else:
                why = self._outcomes.get(method, "not tried")
            clauses.append(f"{method}: {why}")
        return clauses

    def _broken(self, exc: BaseException) -> AuthenticationFailed:
        tried = f" after {_count(self._offered)}" if self._offered else ""
        return AuthenticationFailed(
            f"{self.label}: Authentication failed for {self.where}: the "
            f"connection failed{tried}: {exc or type(exc).__name__}"
        )


def _count(sources: list[str]) -> str:
    counts: dict[str, int] = {}
    for source in sources:
        counts[source] = counts.get(source, 0) + 1
    return ", ".join(
        f"{source} x{number}" if number > 1 else source
        for source, number in counts.items()
    )
