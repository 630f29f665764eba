"""A short digest of the data a stage learns from, so a finished stage is reused only on the data
it learnt from: adding, removing or replacing an image retrains what depends on it.

A dataset that names the files it reads (``DATA_FILES``: the IDX datasets, scikit-learn's digits)
is read by content, decompressed, so every machine that holds the same images gets the same
digest - Debian's Fashion-MNIST, torchvision's download or Zalando's own ``.gz`` files alike - and
a committed study record stays valid on a fresh clone. Any other data root (a folder of images)
is read as its files' relative paths, sizes and modification times (stat only: cheap for a folder
of any size; a copied folder counts as changed). A dataset with neither (a plugin without a root)
has no digest: ``None``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from horkd.registry import Registry

#: The files a dataset's builder reads: name -> (root or None) -> files (empty: none found there).
DATA_FILES: Registry[Callable[[str | None], list[Path]]] = Registry("dataset files", lazy={
    **dict.fromkeys(("fashion_mnist", "mnist", "digits"), "horkd.data.vision"),
    "glyphs": "horkd.data.glyphs",
})

#: How a dataset carves its own held-out split from a root, where no setting says so: name ->
#: root -> the rule's name (None: the root carves nothing). Part of the digest, so a stage that
#: learnt under an older rule is trained again rather than scored on images it trained on.
SPLIT_RULES: Registry[Callable[[str], str | None]] = Registry(
    "dataset split rules", lazy={"image_folder": "horkd.data.held_out"})


#: What a dataset's builder makes of its files, where its rules can change (the glyph set's
#: drawing and choice of faces): name -> () -> version, part of the digest, so a stage that
#: learnt from an older make of the same files is trained again.
DATA_VERSIONS: Registry[Callable[[], int | str]] = Registry(
    "dataset versions", lazy={"glyphs": "horkd.data.glyphs"})


def data_digest(dataset: str, root: str | None) -> str | None:
    """The digest of ``dataset``'s files: by content where it names them, else the folder."""
    if dataset in DATA_FILES:
        files = DATA_FILES.get(dataset)(root)
        if files:
            digest = hashlib.sha256()
            if dataset in DATA_VERSIONS:
                digest.update(f"version\0{DATA_VERSIONS.get(dataset)()}\0".encode())
            for path in sorted(files, key=lambda p: p.name.removesuffix(".gz")):
                stat = path.stat()
                content = content_digest(str(path), stat.st_size, stat.st_mtime_ns)
                digest.update(f"{path.name.removesuffix('.gz')}\0{content}\0".encode())
            return digest.hexdigest()[:16]
    if not root:
        return None
    digest = folder_digest(Path(root))
    rule = SPLIT_RULES.get(dataset)(root) if dataset in SPLIT_RULES and digest else None
    return _short(f"{digest}\0{rule}") if rule else digest


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


@lru_cache(maxsize=8192)  # a font folder holds hundreds of files: walked each call
def content_digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's content digest (a ``.gz`` file's decompressed content), read once per process
    for each (size, time) it is seen with."""
    digest = hashlib.sha256()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
