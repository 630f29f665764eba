"""A partition of a dataset's training images into named, disjoint parts, read from a manifest.

Why: a teacher that must never see its students' images, and a test split no earlier choice has
scored, are sets of training images that every run of a study has to agree on. They are written
once (``horkd split``), committed as a readable JSON manifest, and named by the configs
(``data.split_file``, ``data.part``, ``data.test_part``). The manifest says which data it was
drawn from (the dataset and its data digest), so it is never applied to other images.

A manifest holds the parts in one of two forms:

- ``codes`` + ``layout`` (what ``horkd split`` writes): one character per training image, in the
  dataset's order, the lines joined; ``codes`` maps a character to a part, ``.`` is in no part.
- ``parts``: part name -> list of training indices or ``"first-last"`` ranges (to write by hand).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "horkd partition 1"
LINE = 100  # images per layout line
NONE = "."  # the layout character of an image in no part


class PartitionError(ValueError):
    """A manifest that cannot be used: one line saying which file and why."""


@dataclass(frozen=True)
class Partition:
    """A manifest, read and checked for itself (not yet against the data).

    Attributes:
        path: Where it was read from.
        dataset: The dataset's registry name it was drawn for.
        data_files: That dataset's data digest when it was drawn (``None``: unknown).
        images: How many training images the dataset held.
        parts: Part name -> sorted training-set indices.
        digest: What the parts are (not how the file is laid out): enters stage fingerprints.
    """

    path: str
    dataset: str
    data_files: str | None
    images: int
    parts: dict[str, Tensor]
    digest: str

    def indices(self, part: str, key: str = "data.part") -> Tensor:
        """The training indices of ``part``; an unknown name is one line naming the known."""
        if part not in self.parts:
            raise PartitionError(f"{key}={part}: {self.path} has no such part (its parts: "
                                 f"{', '.join(self.parts)})")
        return self.parts[part]

    def check(self, dataset: str, images: int, data_files: str | None) -> None:
        """Refuse data other than what the manifest was drawn from."""
        if dataset != self.dataset:
            raise PartitionError(f"{self.path} was drawn for {self.dataset}, not for "
                                 f"data.dataset={dataset}")
        if images != self.images:
            raise PartitionError(f"{self.path} was drawn for {self.images} training images of "
                                 f"{dataset}, the data here holds {images}: draw it again "
                                 "(horkd split) for this data")
        if self.data_files and data_files and data_files != self.data_files:
            raise PartitionError(f"{self.path} was drawn for {dataset} data {self.data_files}, "
                                 f"the data here is {data_files} (images added, removed or "
                                 "replaced): draw it again (horkd split) for this data")


def load_partition(path: str | Path) -> Partition:
    """The manifest at ``path`` (relative: from the current folder), read once per version."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        raise PartitionError(f"data.split_file: no partition file at {resolved} (a relative "
                             "path is read from the current folder)") from None
    return _load(str(path), str(resolved), stat.st_mtime_ns, stat.st_size)


def partition_digest(path: str | Path) -> str:
    return load_partition(path).digest


def with_partition_digest(data: dict[str, Any]) -> dict[str, Any]:
    """Data settings with ``split_file`` replaced by its parts' digest: a stage is reused only
    on the same parts (wherever the file lies), and retrained when they change."""
    if not data.get("split_file"):
        return data
    return {**data, "split_file": partition_digest(data["split_file"])}


@lru_cache(maxsize=16)
def _load(shown: str, path: str, mtime_ns: int, size: int) -> Partition:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PartitionError(f"{shown} cannot be read as a partition manifest: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PartitionError(f"{shown} is not a partition manifest (its \"format\" must be "
                             f"\"{FORMAT}\"; horkd split writes one)")
    dataset, images = raw.get("dataset"), raw.get("images")
    if not isinstance(dataset, str) or not isinstance(images, int) or images < 1:
        raise PartitionError(f"{shown} must name its \"dataset\" and its number of training "
                             "\"images\"")
    if "layout" in raw:
        parts = _from_layout(shown, raw, images)
    elif isinstance(raw.get("parts"), dict):
        parts = _from_lists(shown, raw["parts"], images)
    else:
        raise PartitionError(f"{shown} holds neither a \"layout\" nor \"parts\"")
    if not parts:
        raise PartitionError(f"{shown} names no part")
    data_files = raw.get("data_files")
    digest = hashlib.sha256(f"{dataset}\0{data_files}\0{images}".encode())
    for name in sorted(parts):
        digest.update(f"\0{name}\0".encode())
        digest.update(parts[name].numpy().tobytes())
    return Partition(shown, dataset, data_files, images, parts, digest.hexdigest()[:16])


def _from_layout(shown: str, raw: dict[str, Any], images: int) -> dict[str, Tensor]:
    codes, lines = raw.get("codes"), raw.get("layout")
    if not isinstance(codes, dict) or not isinstance(lines, list):
        raise PartitionError(f"{shown}: \"codes\" must map characters to parts and \"layout\" "
                             "be a list of lines")
    layout = "".join(str(line) for line in lines)
    if len(layout) != images:
        raise PartitionError(f"{shown}: its layout places {len(layout)} images but it says the "
                             f"dataset holds {images}")
    bad = sorted(set(layout) - set(codes) - {NONE})
    if bad:
        raise PartitionError(f"{shown}: its layout uses {', '.join(map(repr, bad))}, which "
                             "\"codes\" does not name")
    if len(set(codes.values())) != len(codes) or NONE in codes or \
            any(len(code) != 1 or not code.isascii() for code in codes):
        raise PartitionError(f"{shown}: \"codes\" must give each part one ASCII character "
                             f"other than {NONE!r}")
    chars = torch.frombuffer(bytearray(layout.encode("latin-1", "replace")), dtype=torch.uint8)
    return {name: torch.nonzero(chars == ord(code)).flatten() for code, name in codes.items()}


def _from_lists(shown: str, given: dict[str, Any], images: int) -> dict[str, Tensor]:
    owner = torch.full((images,), -1, dtype=torch.long)
    parts = {}
    for number, (name, items) in enumerate(given.items()):
        index = _indices(shown, name, items)
        outside = index[(index < 0) | (index >= images)]
        if outside.numel():
            raise PartitionError(f"{shown}: part {name} names image {int(outside[0])}, outside "
                                 f"the dataset's 0..{images - 1}")
        shared = index[owner[index] >= 0]
        if shared.numel():
            other = list(given)[int(owner[shared[0]])]
            raise PartitionError(f"{shown}: parts {other} and {name} share {shared.numel()} "
                                 f"images (e.g. {int(shared[0])}); parts must be disjoint")
        owner[index] = number
        parts[name] = index.sort().values
    return parts


def _indices(shown: str, name: str, items: Any) -> Tensor:
    values: list[int] = []
    for item in items if isinstance(items, list) else [None]:
        if isinstance(item, int) and not isinstance(item, bool):
            values.append(item)
        elif isinstance(item, str) and item.count("-") == 1 and \
                all(side.strip().isdigit() for side in item.split("-")):
            first, last = (int(side) for side in item.split("-"))
            values.extend(range(first, last + 1))
        else:
            raise PartitionError(f"{shown}: part {name} must list training indices or "
                                 f"\"first-last\" ranges, not {item!r}")
    index = torch.tensor(values, dtype=torch.long)
    if index.unique().numel() != index.numel():
        raise PartitionError(f"{shown}: part {name} names an image twice")
    return index


def codes_for(names: list[str]) -> dict[str, str]:
    """A character per part: its initial where free, else the first free letter or digit."""
    free = string.ascii_uppercase + string.ascii_lowercase + string.digits
    codes: dict[str, str] = {}
    for name in names:
        initial = name[:1].upper()
        code = initial if initial in free and initial not in codes else \
            next(c for c in free if c not in codes)
        codes[code] = name
    return codes


def manifest(dataset: str, data_files: str | None, labels: Tensor, parts: dict[str, Tensor],
             drawn: dict[str, Any]) -> dict[str, Any]:
    """The manifest of disjoint ``parts`` (training indices) of a dataset with ``labels``:
    counts per part and class for the reader, the layout for the loader."""
    codes = codes_for(list(parts))
    layout = bytearray(NONE.encode() * labels.numel())
    for code, name in codes.items():
        for i in parts[name].tolist():
            layout[i] = ord(code)
    text = layout.decode()
    classes = int(labels.max()) + 1 if labels.numel() else 0
    return {
        "format": FORMAT,
        "about": "training image i of the dataset (in its own order) is in the part whose code "
                 "is character i of the layout, its lines joined (each line holds "
                 f"{LINE} images); '{NONE}' is in no part",
        "dataset": dataset,
        "data_files": data_files,
        "images": labels.numel(),
        "drawn": drawn,
        "counts": {name: {"total": index.numel(),
                          "per_class": torch.bincount(labels[index], minlength=classes).tolist()}
                   for name, index in parts.items()},
        "codes": codes,
        "layout": [text[i:i + LINE] for i in range(0, len(text), LINE)],
    }


def dump_manifest(content: dict[str, Any]) -> str:
    """JSON with one layout line per line and each list of numbers on one line: readable and
    diffable."""
    text = json.dumps(content, indent=1)
    return re.sub(r"\[\s+((?:\d+,\s+)*\d+)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"
