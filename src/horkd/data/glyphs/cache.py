"""The glyph set rendered once and kept: uint8 images, labels, the face of each image, and a
manifest of which font went where and which were left out, keyed by a digest of the font files.

Every run that reads the same fonts at the same settings reads the same images; changing, adding
or removing a font file changes the digest, so the set is rendered anew (and, through the data
digest, every stage that learnt from the old set is retrained). This module only keeps the set
on disk: which faces it holds is decided in :mod:`horkd.data.glyphs.selection`, which font goes
to which split in :mod:`horkd.data.glyphs.splits`, and what a user is told in
:mod:`horkd.data.glyphs.messages`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from horkd.data.digest import data_digest
from horkd.data.glyphs.fonts import font_files
from horkd.data.glyphs.messages import no_fonts_message
from horkd.data.glyphs.render import RENDER_VERSION
from horkd.data.glyphs.selection import render_set
from horkd.data.glyphs.splits import (
    assign_splits,
    split_counts,
    write_listing,
)
from horkd.data.registry import DataNotFoundError
from horkd.run_lock import waiting_lock

CACHE_ENV = "HORKD_CACHE_DIR"


@dataclass
class GlyphSet:
    """``images`` uint8 ``[N, side, side]``, ``labels`` int64 ``[N]`` (index into
    ``CHARACTERS``), ``faces`` int64 ``[N]`` (index into ``manifest["faces"]``)."""

    images: np.ndarray
    labels: np.ndarray
    faces: np.ndarray
    manifest: dict[str, Any]
    folder: Path

    def split_of_images(self) -> np.ndarray:
        """Each image's split name (``train``, ``val`` or ``test``), by its face's family."""
        names = np.array([face["split"] for face in self.manifest["faces"]])
        return names[self.faces]


def cache_root() -> Path:
    """``$HORKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/horkd``, else ``~/.cache/horkd``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "horkd"


def load_glyphs(
    root: str | None,
    side: int = 32,
    renders: int = 4,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    processes: int | None = None,
) -> GlyphSet:
    """The glyph set of the fonts under ``root`` (the system's when ``None``): read from the
    cache, or rendered (``processes`` workers; default up to 8) and cached first; its faces
    split by the fractions (the split is not cached: one set serves every pair)."""
    files = font_files(root)
    if not files:
        raise DataNotFoundError(no_fonts_message(root))
    digest = data_digest("glyphs", root)
    settings = {"fonts": digest, "side": side, "renders": renders, "version": RENDER_VERSION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / "glyphs" / f"{side}px-{renders}r-{key}"
    if not (folder / "manifest.json").is_file():
        with waiting_lock(folder.with_name(folder.name + ".lock")):
            if not (folder / "manifest.json").is_file():
                _write(folder, render_set(files, side, renders, processes), settings)
    found = _read(folder)
    assign_splits(found.manifest["faces"], test_fraction, val_fraction)
    found.manifest["counts"].update(split_counts(found.manifest["faces"], renders))
    write_listing(found.folder, found.manifest, test_fraction, val_fraction)
    return found


def _write(folder: Path, rendered: tuple, settings: dict[str, Any]) -> None:
    """Into a temporary folder beside ``folder``, then renamed: a reader never sees half."""
    images, labels, faces, manifest = rendered
    manifest["settings"] = settings
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        np.save(temp / "images.npy", images)
        np.save(temp / "labels.npy", labels)
        np.save(temp / "faces.npy", faces)
        (temp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():  # a half-written set left by a killed run
            shutil.rmtree(folder)
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _read(folder: Path) -> GlyphSet:
    manifest = json.loads((folder / "manifest.json").read_text())
    return GlyphSet(np.load(folder / "images.npy"), np.load(folder / "labels.npy"),
                    np.load(folder / "faces.npy"), manifest, folder)

