"""Notes true of every run of one invocation, said once.

A study trains dozens of runs from one folder, each in a worker that loads the data again: a
note about the data ("has no test split beside it", the HR side taken from the images) was
printed before every run (16 times in a log of 294 lines). Inside :func:`once_per_invocation`
each distinct note is printed by the first process that says it; the others see its marker file
in a folder every local worker shares (named by an environment variable, which spawned workers
inherit). Outside it - one ``horkd run`` - every note is printed as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ONCE_DIR = "HORKD_NOTES_SAID"  # the folder of the notes said so far in this invocation


def note(text: str) -> None:
    """Print ``text`` unless this invocation has said it already."""
    folder = os.environ.get(ONCE_DIR)
    if folder:
        marker = Path(folder) / hashlib.sha256(text.encode()).hexdigest()[:20]
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        except OSError:
            pass  # the folder went away: saying a note twice is better than never
    print(text, flush=True)


@contextmanager
def once_per_invocation() -> Iterator[None]:
    """Within the block (and in worker processes started in it), each note is said once."""
    if os.environ.get(ONCE_DIR):  # an outer block already counts
        yield
        return
    folder = tempfile.mkdtemp(prefix="horkd-notes-")
    os.environ[ONCE_DIR] = folder
    try:
        yield
    finally:
        os.environ.pop(ONCE_DIR, None)
        shutil.rmtree(folder, ignore_errors=True)
