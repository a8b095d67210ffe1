"""A stream class named by its dotted path, as Circus allows: only from the
config file, since circusd imports it and runs it inside the daemon (as
root). ``add`` and ``set`` refuse it (see circusd.control.commands).

The class is called with the block's other keys as keyword arguments (all
text, as written), and the instance is called with Circus's mapping for
every chunk read from a pipe: ``{"data": bytes, "pid": int, "name":
"stdout" or "stderr"}``. A class with an ``open()`` method gets
``close()`` when the watcher stops and ``open()`` when it starts again
(and both to reopen files); one without gets ``close()`` only when the
watcher is removed or its stream changes. An exception drops that chunk;
the first is logged, with the number of bytes dropped once a chunk goes
through again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from circusd.errors import ValueProblem
from circusd.streams.base import STREAM_NAMES, Stream

log = logging.getLogger(__name__)


def load_class(path: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # whatever importing someone's module raises
        raise ValueProblem(f"cannot load stream class {path!r}: {exc}") from None
    if not callable(found):
        raise ValueProblem(f"stream class {path!r} is not callable")
    return found


class CustomStream(Stream):
    def __init__(self, path: str, options: Mapping[str, str], which: int) -> None:
        self._path = path
        self._name = STREAM_NAMES[which]
        try:
            self._instance = load_class(path)(**options)
        except ValueProblem:
            raise
        except Exception as exc:
            raise ValueProblem(
                f"stream class {path!r} failed to start: {exc}"
            ) from None
        self._reopenable = callable(getattr(self._instance, "open", None))
        self._open = True
        self._failing = False
        self._dropped = 0

    def write(self, data: bytes, pid: int) -> None:
        try:
            self._instance({"data": data, "pid": pid, "name": self._name})
        except Exception as exc:
            self._dropped += len(data)
            if not self._failing:
                self._failing = True
                log.error(
                    "stream failed class=%s error=%r (dropping output until it "
                    "works again)",
                    self._path,
                    exc,
                )
            return
        if self._failing:
            log.warning(
                "stream works again class=%s dropped_bytes=%d",
                self._path,
                self._dropped,
            )
            self._failing, self._dropped = False, 0

    def open(self) -> None:
        if not self._open:
            self._open = True
            self._call("open")

    def reopen(self) -> None:
        if self._open and self._reopenable:
            self._call("close")
            self._call("open")

    def close(self) -> None:
        if self._open and self._reopenable:
            self._open = False
            self._call("close")

    def park(self) -> None:
        """A new instance stays as it is until the watcher starts."""

    def release(self) -> None:
        if self._open or not self._reopenable:
            self._open = False
            self._call("close")

    def _call(self, method: str) -> None:
        function = getattr(self._instance, method, None)
        if not callable(function):
            return
        try:
            function()
        except Exception as exc:
            log.error("stream %s failed class=%s error=%r", method, self._path, exc)
