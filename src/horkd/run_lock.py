"""One live writer per run directory: an exclusive OS file lock held while a process writes it.

``flock`` locks die with their process, so a run killed by SIGKILL or a power cut never leaves a
stale lock behind: its file stays, naming a process that holds nothing, and rerunning the command
takes the lock and continues. A run that ends in any other way (finished, failed, interrupted)
deletes the file as it lets go. A second writer (the same command in another terminal, a study
worker and a hand-started run) is refused at once, with the process that holds the directory.
Readers (``horkd report``, ``horkd eval``) take no lock.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".horkd.lock"


class RunLockedError(ValueError):
    """The run directory is being written by another live process."""


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Block until this process holds ``path``'s lock (one builder of a shared file at a time:
    the others wait, then find the file built)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class RunLock:
    """Exclusive lock on ``RUN/.horkd.lock``; the file names the holder for the refusal message.

    Where the platform has no ``fcntl`` (Windows), runs are not locked.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no POSIX locks here
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown process"
                os.close(fd)
                raise RunLockedError(
                    f"output directory {self.run_dir} is in use by another horkd process "
                    f"({holder}); wait for it to finish or stop it, or choose another output_dir"
                ) from None
            if _is_at_path(fd, self.path):
                break
            # the file was deleted by a holder letting go between our open and our lock: the
            # lock we got is on a file no one else will open, so take the one at the path
            os.close(fd)
        os.ftruncate(fd, 0)
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {command} (since {stamp})"
                 .encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file and let go (deleted first, while still held, so no other
        process can take a lock on a file that is about to vanish)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            if _is_at_path(fd, self.path):
                self.path.unlink()
        except OSError:  # the folder went away or turned read-only: the lock still dies below
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def _is_at_path(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file now at ``path`` (not one deleted since it was opened)."""
    try:
        here = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def holder(run_dir: str | Path) -> str | None:
    """Who writes ``run_dir`` now (``pid N on HOST: command (since ...)``), or None when no live
    process holds it. Reads the lock without taking it for longer than the check."""
    try:
        import fcntl
    except ImportError:
        return None
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody writes the run (or its writer just let go)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.read(fd, 4096).decode(errors="replace").strip() or "unknown process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
