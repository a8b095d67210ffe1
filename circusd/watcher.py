"""A watcher: a named group of identical processes kept at ``numprocesses``.

Every operation that changes a watcher (start, stop, reload, scaling, a new
config) runs under the watcher's own lock, so commands queue behind each
other instead of being refused, and one slow watcher never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any

from circusd import process as proc
from circusd.config.interpolate import referenced_sockets
from circusd.config.model import WatcherConfig
from circusd.errors import SpawnError, ValueProblem
from circusd.hooks import Hooks
from circusd.reaper import describe_exit, exit_code
from circusd.restart import RestartPolicy
from circusd.streams import Output, Stream, make_stream
from circusd.tree import Tree, children_of
from circusd.users import Identity, resolve

if TYPE_CHECKING:
    from circusd.arbiter import Arbiter

log = logging.getLogger(__name__)

KILL_WAIT = 5.0  # how long to wait for SIGKILLed processes to vanish
SPAWN_RETRY_FLOOR = 0.1  # a failed spawn is never retried faster, even the first


class State(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    FAILED = "failed"


def topic_name(name: str) -> str:
    return name.lower().replace(" ", "_")


class Watcher:
    def __init__(self, config: WatcherConfig, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.config = config
        self.identity: Identity = resolve(config.uid, config.gid)
        self.hooks = Hooks(config.hooks)
        self.state = State.STOPPED
        self.reason: str | None = None  # why it failed, for `status`
        self.processes: dict[int, proc.Process] = {}
        self.lock = asyncio.Lock()
        self.policy = RestartPolicy(config.max_retry)
        self.runtime_added = False
        self.spawns = 0  # processes started, for metrics
        self.unexpected_exits = 0  # exits nobody asked for, for metrics
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._respawn: asyncio.TimerHandle | None = None
        self._fill_task: asyncio.Task[None] | None = None
        self._exited: dict[int, asyncio.Future[None]] = {}
        self._demand_fds: list[int] = []
        # Built (files opened) to check them now, then closed until started:
        # a stopped watcher holds no files.
        self.output = Output(self._open_streams(config))
        self.output.park()
        self._retiring: list[Output] = []  # replaced, their processes stopping

    # -- properties ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def numprocesses(self) -> int:
        return self.config.numprocesses

    @property
    def pids(self) -> list[int]:
        return sorted(self.processes)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def is_running(self) -> bool:
        return self.state in (State.STARTING, State.ACTIVE)

    # -- events ------------------------------------------------------------------

    def publish(self, event: str, **payload: Any) -> None:
        payload["time"] = time.time()
        self.arbiter.publish(f"watcher.{topic_name(self.name)}.{event}", payload)

    # -- configuration ---------------------------------------------------------

    def _open_streams(self, config: WatcherConfig) -> dict[int, Stream]:
        streams: dict[int, Stream] = {}
        owner = resolve(config.uid, config.gid)  # new files belong to the watcher
        key = ""
        try:
            for which, conf in ((1, config.stdout_stream), (2, config.stderr_stream)):
                if conf:
                    key = "stdout_stream" if which == 1 else "stderr_stream"
                    # Only the config file can name a custom class: add and
                    # set refuse one before a config gets here.
                    streams[which] = make_stream(
                        conf, self.name, which, owner, custom=True
                    )
        except (OSError, ValueProblem) as exc:
            for stream in streams.values():
                stream.release()
            if isinstance(exc, ValueProblem):
                raise ValueProblem(str(exc), key) from None
            raise ValueProblem(
                f"cannot open output file {exc.filename}: {exc.strerror}", key
            ) from None
        return streams

    def reopen_streams(self) -> None:
        self.output.reopen()

    async def apply_config(self, config: WatcherConfig) -> None:
        """Take a new config; restart the processes if it changes them.

        A watcher that had failed gets a fresh start with the new config
        (the change is most likely the fix); one stopped on purpose stays
        stopped.
        """
        async with self.lock:
            old = self.config
            identity = resolve(config.uid, config.gid)
            hooks = Hooks(config.hooks)
            streams_changed = (old.stdout_stream, old.stderr_stream) != (
                config.stdout_stream,
                config.stderr_stream,
            )
            output = Output(self._open_streams(config)) if streams_changed else None
            self.config, self.identity, self.hooks = config, identity, hooks
            self.policy.max_retry = config.max_retry
            self.publish("updated")
            if self.state is State.FAILED and config.autostart:
                if output is not None:
                    self.output.release()
                    self.output = output
                await self._start()
                return
            if _needs_no_restart(old, config) and output is None:
                if self.is_running():
                    self._schedule_fill()
                return
            old_output = self.output
            if output is not None:
                self.output = output
                self._retiring.append(old_output)
            if self.is_running():
                await self._replace_all()
            if output is not None:
                await old_output.drained()  # the old processes are gone
                self._retiring.remove(old_output)
                old_output.release()
                if not self.is_running():
                    output.park()  # a stopped watcher holds no files

    # -- start and stop --------------------------------------------------------

    async def start(self) -> dict[str, list[int]]:
        async with self.lock:
            return await self._start()

    async def _start(self) -> dict[str, list[int]]:
        before = set(self.processes)
        if self.is_running():
            return {"started": [], "kept": sorted(before)}
        self.policy.reset()
        self.reason = None
        if not self.hooks.run("before_start", self, self.arbiter):
            log.warning("start cancelled by hook watcher=%s", self.name)
            return {"started": [], "kept": []}
        self.state = State.STARTING
        self.output.open()
        log.info("starting watcher=%s numprocesses=%d", self.name, self.numprocesses)
        await self._fill()
        if self.state is State.STARTING:
            self.state = State.ACTIVE
            self.publish("start")
            self.hooks.run("after_start", self, self.arbiter)
        after = set(self.processes)
        return {"started": sorted(after - before), "kept": sorted(after & before)}

    def start_on_demand(self) -> None:
        """Start when one of the watcher's sockets has a connection waiting."""
        fds = [
            self.arbiter.sockets[name].fileno
            for name in referenced_sockets(self.config)
            if name in self.arbiter.sockets
        ]
        if not fds:
            log.warning("on_demand needs a socket watcher=%s; starting now", self.name)
            self.loop.create_task(self.start())
            return

        def demanded() -> None:
            self._cancel_demand()
            log.info("connection waiting, starting watcher=%s", self.name)
            self.loop.create_task(self.start())

        self._demand_fds = fds
        for fd in fds:
            self.loop.add_reader(fd, demanded)

    def _cancel_demand(self) -> None:
        for fd in self._demand_fds:
            self.loop.remove_reader(fd)
        self._demand_fds = []

    async def stop(self) -> list[int]:
        async with self.lock:
            return await self._stop()

    async def _stop(self, *, final_state: State = State.STOPPED) -> list[int]:
        self._cancel_respawn()
        self._cancel_demand()
        if self.state is State.STOPPED and not self.processes:
            return []
        self.hooks.run("before_stop", self, self.arbiter)
        self.state = State.STOPPING
        stopped = self.pids
        await self.kill_processes(
            list(self.processes.values()), self.config.stop_signal
        )
        await self.output.drained()
        self.output.close()
        self.state = final_state
        self.publish("stop")
        self.hooks.run("after_stop", self, self.arbiter)
        log.info("stopped watcher=%s", self.name)
        return stopped

    async def restart(self) -> dict[str, list[int]]:
        async with self.lock:
            stopped = await self._stop()
            result = await self._start()
            return {"stopped": stopped, **result}

    async def reload(
        self, graceful: bool = True, sequential: bool = False
    ) -> dict[str, list[int]]:
        async with self.lock:
            if not self.is_running():
                return {"stopped": [], "started": [], "kept": []}
            if self.config.send_hup:
                for process in list(self.processes.values()):
                    self._signal_one(process, signal.SIGHUP)
                self.publish("reload")
                return {"stopped": [], "started": [], "kept": self.pids}
            if not graceful:
                stopped = await self._stop()
                result = await self._start()
                return {"stopped": stopped, **result}
            result = await self._replace_all(sequential)
            self.publish("reload")
            return result

    async def _replace_all(self, sequential: bool = False) -> dict[str, list[int]]:
        """Replace every process: new ones first, then the old ones stop."""
        old = list(self.processes.values())
        for process in old:
            process.stopping = True
        started: list[int] = []
        if sequential:
            for process in old:
                await self.kill_processes([process], self.config.stop_signal)
                started += await self._spawn_batch(1)
        else:
            started = await self._spawn_batch(self.numprocesses)
            await self.kill_processes(old, self.config.stop_signal)
        return {"stopped": [p.pid for p in old], "started": started, "kept": []}

    # -- scaling -----------------------------------------------------------------

    async def set_numprocesses(self, count: int) -> int:
        async with self.lock:
            if self.config.singleton:
                count = min(count, 1)
            self.config = self.config.replace(numprocesses=max(count, 0))
            if self.is_running():
                await self._fill()
            return self.numprocesses

    def _schedule_fill(self, delay: float = 0.0) -> None:
        if delay > 0:
            self._cancel_respawn()
            self._respawn = self.loop.call_later(delay, self._schedule_fill)
            return
        self._respawn = None
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = self.loop.create_task(self._fill())

    def _cancel_respawn(self) -> None:
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None

    async def _fill(self) -> None:
        """Bring the running processes to ``numprocesses``: spawn or trim."""
        surplus = [p for p in self.processes.values() if not p.stopping]
        extra = len(surplus) - self.numprocesses
        if extra > 0:
            oldest = sorted(surplus, key=lambda p: p.started_monotonic)[:extra]
            await self.kill_processes(oldest, self.config.stop_signal)
            return
        await self._spawn_batch(-extra)

    async def _spawn_batch(self, count: int) -> list[int]:
        started: list[int] = []
        for index in range(count):
            if index and self.config.warmup_delay:
                await asyncio.sleep(self.config.warmup_delay)
            if not self.is_running() or self._respawn is not None:
                break  # stopped meanwhile, or backing off after a failure
            live = sum(1 for p in self.processes.values() if not p.stopping)
            if live >= self.numprocesses:
                break
            pid = self.spawn_one()
            if pid is None:
                break
            started.append(pid)
        return started

    def _free_wid(self) -> int:
        used = {p.wid for p in self.processes.values()}
        wid = 1
        while wid in used:
            wid += 1
        return wid

    def spawn_one(self) -> int | None:
        """Start one process now; on failure apply the restart policy."""
        wid = self._free_wid()
        if not self.hooks.run("before_spawn", self, self.arbiter):
            return None
        extra_fds: list[int] = []
        try:
            request = self._spawn_request(wid, extra_fds)
            process = proc.spawn(request)
        except (SpawnError, ValueProblem, OSError, ValueError, OverflowError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            if isinstance(exc, proc.IdentityError):
                self._give_up(reason)  # retrying cannot help
            else:
                self._failed_to_start(reason)
            return None
        finally:
            for fd in extra_fds:
                os.close(fd)
        self.processes[process.pid] = process
        self.spawns += 1
        self.arbiter.reaper.watch(process.pid, self._on_exit)
        self._attach_pipes(process)
        self._arm_max_age(process)
        log.info("spawned watcher=%s wid=%d pid=%d", self.name, wid, process.pid)
        self.publish("spawn", process_pid=process.pid)
        self.hooks.run("after_spawn", self, self.arbiter, pid=process.pid)
        return process.pid

    def _spawn_request(self, wid: int, extra_fds: list[int]) -> proc.SpawnRequest:
        config = self.config
        sockets = self.arbiter.sockets
        names = set(sockets) if config.use_sockets else referenced_sockets(config)
        fds: dict[str, int] = {}
        for name in sorted(names):
            sock = sockets.get(name)
            if sock is None:
                raise ValueProblem(f"socket {name!r} is not defined")
            if sock.config.so_reuseport:
                own = sock.make_bound(reuseport=True)
                fds[name] = own.detach()
                extra_fds.append(fds[name])
            else:
                fds[name] = sock.fileno
        stdin_fd = None
        if config.stdin_socket:
            stdin_fd = sockets[config.stdin_socket].fileno
        return proc.SpawnRequest(
            config=config,
            wid=wid,
            identity=self.identity,
            socket_fds=fds,
            stdin_fd=stdin_fd,
            capture_stdout=self.output.captures(1),
            capture_stderr=self.output.captures(2),
        )

    def _failed_to_start(self, reason: str) -> None:
        delay = self.policy.record_exit(None)
        self.reason = reason
        if delay is None:
            self._give_up(f"{reason} ({self.policy.failures} attempts)")
            return
        log.warning(
            "spawn failed watcher=%s reason=%r retry_in=%.2fs",
            self.name,
            reason,
            max(delay, SPAWN_RETRY_FLOOR),
        )
        self._schedule_fill(max(delay, SPAWN_RETRY_FLOOR))

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        log.error("gave up watcher=%s reason=%r", self.name, reason)
        self._cancel_respawn()
        self.state = State.FAILED
        self.publish("failed", reason=reason)
        if self.processes:
            self.loop.create_task(self._stop_after_failure())
        else:
            self._close_output_soon()

    def _close_output_soon(self) -> None:
        """No process is left and none is coming: once the pipes have
        ended, a watcher that is still not running holds no files."""

        async def close() -> None:
            async with self.lock:
                await self.output.drained()
                if not self.is_running() and not self.processes:
                    self.output.close()

        self.loop.create_task(close())

    async def _stop_after_failure(self) -> None:
        async with self.lock:
            if self.state is State.FAILED:
                await self._stop(final_state=State.FAILED)

    def _attach_pipes(self, process: proc.Process) -> None:
        pipes, process.outputs = process.outputs, {}
        self.output.attach(self.loop, process.pid, pipes)

    def _arm_max_age(self, process: proc.Process) -> None:
        if not self.config.max_age:
            return
        age = self.config.max_age + random.randint(0, self.config.max_age_variance)
        self._timers[process.pid] = self.loop.call_later(
            age, lambda: self.loop.create_task(self._expire(process))
        )

    async def _expire(self, process: proc.Process) -> None:
        if process.pid not in self.processes or process.stopping:
            return
        log.info("max_age reached watcher=%s pid=%d", self.name, process.pid)
        process.stopping = True
        if self.is_running():
            await self._spawn_batch(1)
        await self.kill_processes([process], self.config.stop_signal)

    # -- exits -------------------------------------------------------------------

    def _on_exit(self, pid: int, status: int) -> None:
        process = self.processes.pop(pid, None)
        if process is None:
            return
        for output in (self.output, *self._retiring):
            output.exited(pid)
        timer = self._timers.pop(pid, None)
        if timer is not None:
            timer.cancel()
        self.hooks.run("before_reap", self, self.arbiter, pid=pid)
        self.publish("reap", process_pid=pid, exit_code=exit_code(status))
        self.hooks.run("after_reap", self, self.arbiter, pid=pid)
        waiter = self._exited.pop(pid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if process.stopping or not self.is_running():
            log.debug(
                "reaped watcher=%s pid=%d %s", self.name, pid, describe_exit(status)
            )
            return
        self._unexpected_exit(process, status)

    def exit_reason(self, process: proc.Process, status: int) -> str:
        """An unexpected exit in words, for the log and ``status``."""
        return describe_exit(status)

    def _unexpected_exit(self, process: proc.Process, status: int) -> None:
        what = self.exit_reason(process, status)
        self.unexpected_exits += 1
        log.warning(
            "process exited watcher=%s pid=%d %s uptime=%.1fs",
            self.name,
            process.pid,
            what,
            process.age,
        )
        if not self.config.respawn:
            if not self.processes:
                self.state = State.STOPPED
                self.publish("stop")
                self._close_output_soon()
            return
        delay = self.policy.record_exit(process.age)
        if delay is None:
            self._give_up(f"{what} {self.policy.failures} times in a row")
            return
        self.reason = what if delay else None
        self._schedule_fill(delay)

    # -- signals -------------------------------------------------------------------

    def _signal_one(self, process: proc.Process, signum: int) -> None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            return
        self.publish("kill", process_pid=process.pid)

    def send_signal(
        self,
        signum: int,
        pid: int | None = None,
        children: bool = False,
        recursive: bool = False,
    ) -> None:
        """The ``signal`` command: one process, all, or their descendants."""
        targets = (
            [self.processes[pid]] if pid is not None else list(self.processes.values())
        )
        self.hooks.run("before_signal", self, self.arbiter, signum=signum)
        for process in targets:
            if children or recursive:
                for member in children_of(process.pid, recursive):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(member, signum)
            if not children or recursive:
                self._signal_one(process, signum)
        self.hooks.run("after_signal", self, self.arbiter, signum=signum)

    async def kill_processes(
        self,
        processes: list[proc.Process],
        signum: int,
        graceful_timeout: float | None = None,
    ) -> None:
        """Stop processes and everything they started, then wait until gone.

        The leaders get ``signum`` (their whole tree too with stop_children);
        whatever of the tree is left after graceful_timeout gets SIGKILL.
        """
        if not processes:
            return
        if graceful_timeout is None:
            graceful_timeout = self.config.graceful_timeout
        log.info(
            "stopping watcher=%s pids=%s signal=%d",
            self.name,
            [p.pid for p in processes],
            signum,
        )
        for process in processes:
            process.stopping = True
            self.publish("kill", process_pid=process.pid)
        stopping = Tree(process.pid for process in processes)
        try:
            stopping.signal(signum, others=self.config.stop_children)
            stopping.signal(signal.SIGCONT)  # a stopped process must see it
            if not await stopping.wait(graceful_timeout):
                stopping.refresh()
                log.warning(
                    "graceful_timeout expired, killing watcher=%s pids=%s",
                    self.name,
                    stopping.pids,
                )
                stopping.signal(signal.SIGKILL)
                if not await stopping.wait(KILL_WAIT):
                    log.error(
                        "processes survived SIGKILL watcher=%s pids=%s",
                        self.name,
                        stopping.pids,
                    )
        finally:
            stopping.close()
        await self._reaped(processes)

    async def _reaped(self, processes: list[proc.Process]) -> None:
        """Wait for the reaper to collect each exit, so that "stopped" also
        means every exit was seen and published."""
        for process in processes:
            if process.pid in self.processes:
                waiter = self._exited.setdefault(process.pid, self.loop.create_future())
                await asyncio.wait([waiter], timeout=1.0)

    async def kill(
        self, processes: list[proc.Process], signum: int, graceful_timeout: float
    ) -> None:
        """The ``kill`` command: stop these processes; the watcher replaces them."""
        await self.kill_processes(processes, signum, graceful_timeout)
        if self.is_running():
            await self._fill()

    # -- information -------------------------------------------------------------

    def status(self) -> str:
        return self.state.value

    async def close(self) -> None:
        """Stop for good (``rm``) and release files."""
        async with self.lock:
            await self._stop()
            self.output.release()


def _needs_no_restart(old: WatcherConfig, new: WatcherConfig) -> bool:
    from circusd.config.options import WATCHER_OPTIONS

    for name, option in WATCHER_OPTIONS.items():
        if option.restarts and getattr(old, name) != getattr(new, name):
            return False
    return old.rlimits == new.rlimits and old.hooks == new.hooks
