"""The control endpoint: a ZeroMQ ROUTER answering one JSON frame per request.

DEALER clients (Circus's and ours) send ``[json]`` and the ROUTER sees
``[identity, json]``; REQ clients add an empty delimiter frame, which is
answered in kind (Circus never answers them). A message with more than one
body frame gets an error reply (Circus drops it). Every request runs as its
own task, so a command that waits never holds up the others.

Every request is tied to its caller (``auth``) and judged by the policy
(``policy``) before any handler sees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circusd.control import policy, protocol
from circusd.control.auth import UNIDENTIFIED, Caller, Guard
from circusd.control.commands import COMMANDS, Work
from circusd.errors import CircusdError, CommandError, Errno

if TYPE_CHECKING:
    from circusd.daemon import Daemon

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1000


class ControlServer:
    def __init__(self, daemon: Daemon, socket: zmq.asyncio.Socket) -> None:
        self._daemon = daemon
        self._socket = socket
        self._tasks: set[asyncio.Task[None]] = set()
        self._guard: Guard | None = getattr(daemon, "guard", None)
        guard = self._guard
        self.policy = policy.Policy(
            daemon_uid=os.geteuid(),
            owner_uid=guard.owner_uid if guard else None,
            readonly_gid=guard.readonly_gid if guard else None,
        )

    async def serve(self) -> None:
        zap = asyncio.create_task(self._guard.serve()) if self._guard else None
        try:
            await self._serve()
        finally:
            if zap is not None and self._guard is not None:
                zap.cancel()
                self._guard.close()  # before the context ends

    def _caller(self, frame: zmq.Frame) -> Caller:
        # Without a guard (circusd built without one) nobody is identified,
        # so every request is refused rather than trusted.
        return self._guard.caller(frame) if self._guard else UNIDENTIFIED

    async def _serve(self) -> None:
        while True:
            try:
                message = await self._socket.recv_multipart(copy=False)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                raise
            caller = self._caller(message[-1])
            frames = [frame.bytes for frame in message]
            envelope, body = self._split(frames)
            if len(body) != 1:
                log.warning("bad request frames=%d", len(body))
                reason = f"message invalid: expected 1 JSON frame, got {len(body)}"
                await self._send(
                    envelope, protocol.error(None, reason, Errno.MESSAGE_ERROR)
                )
                continue
            if len(self._tasks) >= MAX_IN_FLIGHT:
                await self._refuse(envelope, body[0])
                continue
            task = asyncio.create_task(self._handle(envelope, body[0], caller))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Let the task run now: a burst of quick requests must not fill
            # the in-flight slots before any of them had a chance to finish.
            await asyncio.sleep(0)

    async def drain(self, timeout: float) -> None:
        """Let requests in progress (a ``quit`` waiting for its reply) finish."""
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    @staticmethod
    def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """``[identity, (b"",) body...]`` into the envelope and the body frames."""
        cut = 2 if len(frames) > 2 and frames[1] == b"" else 1
        return frames[:cut], frames[cut:]

    async def _refuse(self, envelope: list[bytes], body: bytes) -> None:
        try:
            request = protocol.parse(body)
            request_id, cast = request.id, request.cast
        except protocol.BadRequest as exc:
            request_id, cast = exc.id, exc.cast
        if not cast:
            reason = f"too many requests in progress (limit {MAX_IN_FLIGHT})"
            await self._send(
                envelope, protocol.error(request_id, reason, Errno.COMMAND_ERROR)
            )

    async def _send(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        try:
            await self._socket.send_multipart([*envelope, protocol.encode(reply)])
        except zmq.ZMQError as exc:
            log.debug("reply not sent error=%s", exc)

    async def _handle(self, envelope: list[bytes], body: bytes, caller: Caller) -> None:
        policy.serving(policy.Grant(caller, self.policy))
        try:
            request = protocol.parse(body)
        except protocol.BadRequest as exc:
            log.info("bad request reason=%r", exc.reason)
            if not exc.cast:
                reply = protocol.error(exc.id, exc.reason, exc.errno)
                await self._send(envelope, reply)
            return
        reply = await self._dispatch(request)
        if not request.cast:
            await self._send(envelope, reply)

    async def _dispatch(self, request: protocol.Request) -> dict[str, Any]:
        handler = COMMANDS.get(request.command)
        if handler is None:
            return protocol.error(
                request.id,
                f"unknown command: {request.command!r}",
                Errno.UNKNOWN_COMMAND,
            )
        props = protocol.Properties(request.properties)
        caller = policy.current().caller
        log.debug("command=%s %s", request.command, caller.describe())
        try:
            kind = self.policy.authorize(caller, request.command, request.properties)
            if self._daemon.arbiter.stopping and not _answered_while_stopping(
                kind, request.command
            ):
                raise CommandError(
                    f"{request.command!r} refused: circusd is stopping; only "
                    "read commands and quit are answered now",
                    Errno.COMMAND_ERROR,
                )
            result = await handler(self._daemon, props)
            if kind in (policy.Kind.CHANGE, policy.Kind.ADMIN):
                policy.audit_line(
                    "allowed", request.command, caller, request.properties.get("name")
                )
            if isinstance(result, Work):
                try:
                    waiting = props.waiting
                except CommandError:
                    result.job.close()  # refused before it ever ran
                    raise
                if not waiting:
                    self._daemon.background(result.job, request.command)
                    return protocol.ok(request.id)
                result = result.reply(await result.job)
        except policy.PermissionDenied as exc:
            policy.audit_line(
                "refused",
                request.command,
                caller,
                request.properties.get("name"),
                exc.reason,
            )
            return protocol.error(request.id, exc.reason, exc.errno)
        except CommandError as exc:
            return protocol.error(request.id, exc.reason, exc.errno)
        except CircusdError as exc:
            return protocol.error(request.id, str(exc), Errno.COMMAND_ERROR)
        except OSError as exc:
            return protocol.error(request.id, f"{exc.strerror or exc}", Errno.OS_ERROR)
        except Exception:
            log.exception("command failed command=%s", request.command)
            return protocol.error(
                request.id,
                "server error: the command failed unexpectedly, see circusd's log",
                Errno.BAD_MSG_DATA_ERROR,
            )
        # A single watcher's `status` replaces "ok" with its state, as in Circus.
        return protocol.ok(request.id, result)


def _answered_while_stopping(kind: policy.Kind, command: str) -> bool:
    """While circusd stops its watchers, nothing may start one again."""
    return kind is policy.Kind.READ or command == "quit"
