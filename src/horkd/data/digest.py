"""A short digest of the data a stage learns from, so a finished stage is reused only on the data
it learnt from: adding, removing or replacing an image retrains what depends on it.

A folder given as the data root is read as its files' relative paths, sizes and modification
times (stat only: cheap for a folder of any size, and a copied folder counts as changed). A
dataset the system keeps (Debian's Fashion-MNIST, scikit-learn's digits) is read by content, so
every machine that holds the same files gets the same digest and a committed study record stays
valid on a fresh clone. A dataset with neither (a plugin without a root) has no digest: ``None``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from horkd.registry import Registry

#: Where a dataset keeps its files when no root is given: name -> () -> files (empty: absent).
SYSTEM_FILES: Registry[Callable[[], list[Path]]] = Registry("system dataset")


def data_digest(dataset: str, root: str | None) -> str | None:
    """The digest of ``dataset``'s files: under ``root`` when given, else its system copy."""
    if root:
        return folder_digest(Path(root))
    if dataset not in SYSTEM_FILES:
        return None
    files = SYSTEM_FILES.get(dataset)()
    if not files:
        return None
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.name}\0{_content_digest(str(path), stat.st_size, stat.st_mtime_ns)}\0"
                      .encode())
    return digest.hexdigest()[:16]


def folder_digest(root: Path) -> str | None:
    """Relative path, size and modification time of every file under ``root`` (links followed);
    ``None`` when ``root`` does not exist (the data loader then says where it looked)."""
    if not root.exists():
        return None
    if root.is_file():
        stat = root.stat()
        return _short(f"{root.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    digest = hashlib.sha256()
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:  # a dangling link: named, so removing or fixing it counts
                digest.update(f"{os.path.relpath(path, root)}\0missing\n".encode())
                continue
            digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's content digest, read once per process for each (size, time) it is seen with."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
