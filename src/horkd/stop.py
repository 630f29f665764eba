"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (what schedulers send on pre-emption) become one
request for the whole command, honoured at the next safe point.

A training command (``run``, ``train``, ``demo``, ``ablate``, ``study``) installs one handler for
its whole life (:func:`handling`). A signal only records the request; the code that can stop
cleanly reads it: the trainer at every step and after every epoch's validation and save (state
saved), the networks before any stage starts, the run before each seed, a study's engine before
it hands out a run. The command then ends with 130 (SIGINT) or 143 (SIGTERM) and one line. A
second signal stops at once (``KeyboardInterrupt``).

The request belongs to the command, not to the module: it lives in a context variable that
:func:`handling` sets for the block it guards, so a library caller (or a test calling ``main``
in-process) gets its own and leaves nothing behind. Where no command installed one, the trainer
installs it around its own loop, as before.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = MappingProxyType({"SIGINT": 130, "SIGTERM": 143})
RERUN = "run the same command again to continue"


class TrainingStopped(RuntimeError):
    """A stop request was honoured: the work so far is saved and the command should end with
    :attr:`exit_status`. ``signal_name`` is the signal that asked (None: another process of a
    torchrun group did)."""

    def __init__(self, message: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process pools whole
        return (type(self), (str(self), self.signal_name))

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signal_name or "", 130)


class StopRequest:
    """The command's stop request. ``immediate``: a signal raises at once instead (a driver that
    only waits on others, such as a Ray or SLURM study, has no safe point to reach)."""

    def __init__(self, immediate: bool = False) -> None:
        self.immediate = immediate
        self.signal_name: str | None = None  # what asked first (a signal or a request)
        self.signals = 0  # signals received (a request made in code is not one)
        self.last_signal: str | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()  # the process whose command this is (workers fork it)

    def handle(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: end now, quietly (its
            os._exit(128 + signum)  # parent stops through its own handler and cleans up)
        name = signal.Signals(signum).name
        self.signals += 1
        self.last_signal = name
        if self.immediate:
            self.signal_name = self.signal_name or name
            raise TrainingStopped(f"stopped by {name}", name)
        if self.signals > 1:  # a second signal: stop now, wherever the run is
            raise KeyboardInterrupt
        self.signal_name = self.signal_name or name

    def request(self, name: str = "SIGTERM") -> None:
        """Ask to stop from code (a study worker whose driver asked or is gone): as a signal
        would, but never counted as a second one."""
        self.signal_name = self.signal_name or name

    def install(self) -> None:
        """Take SIGINT and SIGTERM (only the main thread may; elsewhere nothing is taken)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self.handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


_CURRENT: ContextVar[StopRequest | None] = ContextVar("horkd_stop_request", default=None)


@contextmanager
def handling(immediate: bool = False) -> Iterator[StopRequest]:
    """One stop request (and signal handler) for the block; nested blocks share the outer one."""
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    request = StopRequest(immediate)
    token = _CURRENT.set(request)
    request.install()
    try:
        yield request
    finally:
        request.uninstall()
        _CURRENT.reset(token)


def install() -> StopRequest:
    """For a process that is one command's worker for its whole life (a study's pool worker):
    the request and its handler stay until the process ends."""
    request = _CURRENT.get()
    if request is None or request._pid != os.getpid():  # none yet, or a forked parent's
        request = StopRequest()
        _CURRENT.set(request)
        request.install()
    return request


def current() -> StopRequest | None:
    return _CURRENT.get()


def requested() -> str | None:
    """The signal that asked this process to stop (None: nobody asked)."""
    request = _CURRENT.get()
    return request.signal_name if request is not None else None


def agreed() -> tuple[bool, str | None]:
    """Whether this process or any other of a torchrun group was asked to stop (a collective:
    every rank calls it at the same point), and the signal this process received."""
    from horkd import distributed

    name = requested()
    return distributed.any_rank_true(name is not None), name


def check(where: str) -> None:
    """Raise :class:`TrainingStopped` when a stop was asked (any rank): ``where`` says what
    does not start. Every rank must call it at the same point."""
    stopping, name = agreed()
    if stopping:
        raise TrainingStopped(
            f"stopped by {name or 'another process'} {where}; everything finished so far is "
            f"saved: {RERUN}", name)


def exit_status(name: str | None) -> int:
    return EXIT_STATUS.get(name or "", 130)
