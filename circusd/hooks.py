"""Hooks: Python callables named in the config file, called at lifecycle points.

A hook is called as ``hook(watcher=, arbiter=, hook_name=, **info)``, as in
Circus. A ``before_*`` hook that returns a false value or raises cancels the
step, unless the hook was configured with ``ignore_errors``. Hooks are
resolved only from the config file: ``add`` and ``set`` cannot name one.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from circusd.config.model import Hook
from circusd.errors import ValueProblem

log = logging.getLogger(__name__)

HookFunction = Callable[..., Any]


def resolve(target: str) -> HookFunction:
    module_name, _, attribute = target.rpartition(".")
    if not module_name:
        raise ValueProblem(f"hook {target!r} is not a dotted path (module.function)")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueProblem(f"cannot load hook {target!r}: {exc}") from None
    if not callable(function):
        raise ValueProblem(f"hook {target!r} is not callable")
    return function


class Hooks:
    def __init__(self, hooks: Mapping[str, Hook]) -> None:
        self._hooks = {
            name: (resolve(hook.target), hook) for name, hook in hooks.items()
        }

    def run(self, name: str, watcher: Any, arbiter: Any, **info: Any) -> bool:
        """Run hook ``name``; False means the step it guards must not happen."""
        entry = self._hooks.get(name)
        if entry is None:
            return True
        function, hook = entry
        try:
            result = function(watcher=watcher, arbiter=arbiter, hook_name=name, **info)
        except Exception as exc:
            log.error(
                "hook failed watcher=%s hook=%s target=%s error=%r",
                watcher.name,
                name,
                hook.target,
                exc,
            )
            watcher.publish("hook_failure", name=name, error=str(exc))
            return hook.ignore_errors
        if name.startswith("before_") and not result and not hook.ignore_errors:
            watcher.publish(
                "hook_failure", name=name, error="hook returned a false value"
            )
            return False
        watcher.publish("hook_success", name=name)
        return True
