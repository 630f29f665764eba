"""Users' image files streamed through a DataLoader with workers: never all in memory, and a file
that cannot be read is reported (with what is wrong) instead of stopping the others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from horkd.data.images import IMAGE_EXTENSIONS, BadImageError
from horkd.data.loader import Dataset, default_collate, ignore_stop_signals
from horkd.inference.preprocess import (
    InputKind,
    ModelInput,
    image_tensor,
    small_image_note,
    to_pil,
)


def image_paths(paths: list[str | Path]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively (sorted)."""
    found: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found += sorted(
                p for p in given.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                and (p.is_file() or p.is_symlink())
            )
        elif given.exists() or given.is_symlink():
            found.append(given)
        else:
            raise FileNotFoundError(f"no such file or folder: {given}")
    if not found:
        shown = ", ".join(map(str, paths))
        raise FileNotFoundError(
            f"no image files in {shown} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
        )
    return found


class _Files(Dataset):
    def __init__(self, paths: list[Path], model: ModelInput, kind: InputKind) -> None:
        self.paths, self.model, self.kind = paths, model, kind

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, str | None, str | None]:
        try:
            image = to_pil(self.paths[index], self.model.channels)
            note = small_image_note(image, self.model, self.kind)
            return image_tensor(image, self.model, self.kind), index, None, note
        except BadImageError as exc:
            return None, index, reason_only(str(exc), self.paths[index]), None
        except Exception as exc:  # noqa: BLE001 - any file a user points at may fail anyhow
            return None, index, f"{type(exc).__name__}: {exc}", None


def reason_only(message: str, path: Path) -> str:
    """What is wrong with a file, without the path a decoder's message starts with (the output
    names the file in a column of its own)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _collate(items: list[tuple[Any, ...]]) -> tuple[list[tuple[Tensor, list[int]]],
                                                    list[tuple[int, str]], dict[int, str]]:
    """Images of one size stacked together (a model trained across LR sizes takes LR captures
    at their own sizes), the failures and the notes on images that were used."""
    groups: dict[tuple[int, ...], list[tuple[Tensor, int]]] = {}
    for x, i, error, _ in items:
        if error is None:
            groups.setdefault(tuple(x.shape), []).append((x, i))
    failed = [(i, error) for _, i, error, _ in items if error is not None]
    notes = {i: note for _, i, error, note in items if error is None and note}
    batches = [(default_collate([x for x, _ in g]), [i for _, i in g]) for g in groups.values()]
    return batches, failed, notes


@dataclass
class Failures:
    """Files that could not be used, in the order met: (path index, what is wrong); and notes
    on files that were used (an image far below the model's input size), by path index."""

    rows: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)
    notes: dict[int, str] = field(default_factory=dict)
    at: dict[int, str] = field(default_factory=dict)  # path index -> what is wrong (no path)

    @property
    def items(self) -> list[str]:
        """``"path: what is wrong"`` per file, for a log line or an errors file."""
        return [f"{path}: {reason}" for path, reason in self.rows]


def stream(
    paths: list[Path],
    model: ModelInput,
    kind: InputKind,
    batch_size: int = 64,
    workers: int = 2,
    failures: Failures | None = None,
) -> Iterator[tuple[Tensor, list[int]]]:
    """Batches of (images, indices into ``paths``); unreadable files go to ``failures``."""
    loader = DataLoader(
        _Files(paths, model, kind),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals if workers else None,  # the command stops them
    )
    for batches, failed, notes in loader:
        if failures is not None:
            failures.rows.extend((str(paths[i]), error) for i, error in failed)
            failures.at.update(failed)
            failures.notes.update(notes)
        yield from batches


def as_batches(images: list[Any], model: ModelInput, kind: InputKind,
               notes: dict[int, str] | None = None) -> list[tuple[Tensor, list[int]]]:
    """In-memory images (the Python API) through the same per-image steps, stacked by size;
    ``notes`` collects, by index, what ``predict`` notes of an image (far below the model's
    size)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    pictures = [to_pil(image, model.channels) for image in images]
    if notes is not None:
        for i, picture in enumerate(pictures):
            said = small_image_note(picture, model, kind)
            if said:
                notes[i] = said
    tensors = [image_tensor(picture, model, kind) for picture in pictures]
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return [(torch.stack([tensors[i] for i in idx]), idx) for idx in groups.values()]
