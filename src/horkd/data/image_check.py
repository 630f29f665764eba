"""Unreadable image files: find them once at load time, then fail naming the file or skip them.

One corrupt file in a million should not cost a run hours in: every file-backed dataset is checked
when it is built (``PIL.Image.verify``, which reads headers and chunk checksums without decoding),
and a file that still fails to decode later raises an error that names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

SKIP_HINT = "fix or remove it, or pass --skip-bad-images to skip and count unreadable files"

Sample = TypeVar("Sample", bound=tuple[Any, int])


class BadImageError(ValueError):
    """An image file that cannot be decoded."""


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a readable image, or None when it is."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types for truncated or foreign files
        return f"{type(exc).__name__}: {exc}"
    return None


def readable_splits(
    *splits: Sequence[Sample], skip: bool, dataset: str
) -> tuple[list[list[Sample]], list[str]]:
    """Each split's (path, label) samples whose image files are readable, and the paths skipped
    across all of them (with ``skip``; without it the first unreadable file stops the load)."""
    kept: list[list[Sample]] = []
    bad: list[str] = []
    for samples in splits:
        good: list[Sample] = []
        for sample in samples:
            problem = image_problem(sample[0])
            if problem is None:
                good.append(sample)
            elif skip:
                bad.append(str(sample[0]))
            else:
                raise BadImageError(
                    f"{dataset}: unreadable image {sample[0]} ({problem}); {SKIP_HINT}"
                )
        kept.append(good)
    if bad:
        print(f"{dataset}: skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", flush=True)
    return kept, bad


def open_rgb_or_gray(path: str | Path, channels: int | None = None) -> Image.Image:
    """Decode ``path`` fully; an error names the file instead of surfacing deep in a DataLoader."""
    try:
        with Image.open(path) as image:
            image.load()
            if channels is None:
                return image.copy()
            return image.convert("L" if channels == 1 else "RGB")
    except Exception as exc:
        raise BadImageError(f"cannot decode image {path} ({type(exc).__name__}: {exc})") from None
