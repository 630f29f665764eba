"""Users' image files: every way one can be bad, found up front where it can be, one line each.

A run over a folder of images decodes every file once before training (a full decode, under
PIL's decompression-bomb limit, in a thread pool): damaged, truncated, empty, foreign and
oversized files are named with what is wrong, and either stop the run or, with
``--skip-bad-images``, are left out and counted. Decoding applies the EXIF orientation and turns
any mode (greyscale, RGBA, palette, 16-bit, CMYK) into the configured channels. A file that
fails later (deleted while a run reads it) is named then, and skipped when skipping is on.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from horkd.notes import note

SKIP_HINT = "fix or remove them, or pass --skip-bad-images to leave them out (counted)"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SHOWN = 20  # bad files named in one error message

Sample = TypeVar("Sample", bound=tuple[Any, int])


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and what is wrong.
    ``missing``: there is no file at the path (a reader that had checked it earlier knows it
    went away since)."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


GONE_SINCE = "it was there when the run started: deleted or moved since?"


ORIENTATION = 0x0112  # the EXIF tag saying how a photo must be turned to be shown upright


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode, refusing decompression bombs before decoding them, upright."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
    if image.getexif().get(ORIENTATION, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def describe_failure(path: str | Path, exc: BaseException) -> str:
    """What is wrong with ``path``, in words, from the exception its decoding raised."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return f"not found: a link to {os.readlink(path)}, which does not exist"
        return "not found"
    if isinstance(exc, Image.DecompressionBombWarning | Image.DecompressionBombError):
        return (f"refused: more pixels than PIL's decompression-bomb limit "
                f"({Image.MAX_IMAGE_PIXELS:,}); {exc}")
    if isinstance(exc, IsADirectoryError):
        return "a folder where an image file was expected"
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read (wrong format or not an image at all)"
    if isinstance(exc, OSError):
        return f"damaged or truncated image ({exc})"
    return f"{type(exc).__name__}: {exc}"


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable image, or None when it decodes."""
    try:
        _open(path)
    except Exception as exc:  # PIL raises many types for damaged or foreign files
        return describe_failure(path, exc)
    return None


def to_channels(image: Image.Image, channels: int | None) -> Image.Image:
    """Any PIL mode as greyscale (1) or RGB (3): palettes with transparency go through RGBA,
    16-bit and float images are scaled to 8 bits, not clipped."""
    if channels is None:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray((np.clip(array / top, 0, 1) * 255).round().astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def load_image(path: str | Path, channels: int | None = None) -> Image.Image:
    """Decode ``path`` (EXIF-oriented, in ``channels``); any failure names the file."""
    try:
        return to_channels(_open(path), channels)
    except Exception as exc:
        raise BadImageError(f"{path}: {describe_failure(path, exc)}",
                            missing=isinstance(exc, FileNotFoundError)) from None


GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@functools.lru_cache(maxsize=16)
def stored_channels(root: str, probes: int = 256) -> int:
    """``data.channels`` unset: 1 when the folder's images are grey, else 3. Read from up to
    ``probes`` files spread over the folder (unreadable ones aside; see :func:`_grey`): a
    folder of grey images trained as RGB triples the first layer's inputs for nothing, and a
    new user had no hint that ``data.channels=1`` exists. A function of the folder alone, so a
    run's data and its stages' fingerprints agree on it."""
    files = sorted(str(p) for p in Path(root).rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    seen = False
    for path in files[::max(1, len(files) // probes)][:probes]:
        try:
            grey = _grey(path)
        except Exception:  # a damaged file is named by the data check, not here
            continue
        if not grey:
            return 3  # one colour image: the folder is colour
        seen = True
    return 1 if seen else 3


GREY_TOLERANCE = 3  # channels this close count as equal (JPEG's colour rounding of a grey image)


def _grey(path: str) -> bool:
    """Stored grey (its mode says so, read from the header), or grey in content though stored
    as RGB, RGBA or a palette (decoded, a thumbnail's channels compared)."""
    with Image.open(path) as image:
        if image.mode in GREY_MODES:
            return True
        image.draft("RGB", (64, 64))  # JPEG decodes at a fraction of its size
        small = image.convert("RGB")
    small.thumbnail((64, 64))
    pixels = np.asarray(small, dtype=np.int16)
    return int(np.abs(pixels - pixels[..., :1]).max()) <= GREY_TOLERANCE


def problems_of(paths: Sequence[str | Path], workers: int | None = None) -> dict[str, str]:
    """path -> what is wrong, for every path that does not decode (a pass over all files)."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(image_problem, paths)
        return {str(p): problem for p, problem in zip(paths, found, strict=True) if problem}


def readable_splits(
    *splits: Sequence[Sample], skip: bool, dataset: str
) -> tuple[list[list[Sample]], list[str]]:
    """Each split's (path, label) samples whose image files decode, and the paths left out
    across all of them. Without ``skip`` any bad file stops the load, all of them named."""
    bad = problems_of([sample[0] for samples in splits for sample in samples])
    if bad and not skip:
        lines = [f"  {path}: {problem}" for path, problem in list(bad.items())[:SHOWN]]
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise BadImageError(
            f"{dataset}: {len(bad)} unusable image file(s); {SKIP_HINT}:\n"
            + "\n".join(lines) + more
        )
    kept = [[s for s in samples if str(s[0]) not in bad] for samples in splits]
    if bad:
        first, problem = next(iter(bad.items()))
        note(f"{dataset}: left out {len(bad)} unusable image file(s), e.g. {first}: {problem}")
    return kept, list(bad)
