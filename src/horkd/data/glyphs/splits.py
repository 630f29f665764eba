"""Which font goes where: whole design groups to test, validation and training, and the training
groups halved between the teachers and their students.

Kept apart from the cache because the split is a rule on the manifest's faces, not part of the
rendered set: one cached set serves every pair of fractions, and a reader asking "which font is
where" finds the whole answer here. Every order is a hash of the group keys, so the split of a
font set is the same on every machine and in every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from horkd.data.glyphs.fonts import CHARACTERS

#: Raise it whenever a rule below changes which font goes where: it is part of the glyph set's
#: data digest (so stages that learnt from the old split retrain, and no test font of the new
#: split is left in a teacher trained on the old) and of the split listing's name.
SPLIT_VERSION = 1
MIN_FAMILIES = 3  # the fewest that split: one family each for train, validation and test
SPLITS = ("train", "val", "test")


def assign_splits(faces: list[dict[str, Any]], test_fraction: float, val_fraction: float) -> None:
    """Whole families to test, then validation, in an order fixed by a hash of their keys,
    until each holds its share of the faces; the rest train. At least one family each."""
    sizes = _family_sizes(faces)
    order = _hash_order(sizes)
    total, split = len(faces), {}
    shares = (("test", test_fraction, 2), ("val", val_fraction, 1))  # families left after it
    position = 0
    for name, fraction, leave in shares:
        filled = 0
        while position < len(order) - leave and (filled == 0 or filled < fraction * total):
            split[order[position]] = name
            filled += sizes[order[position]]
            position += 1
    for key in order[position:]:
        split[key] = "train"
    for face in faces:
        face["split"] = split[face["key"]]


def font_halves(faces: list[dict[str, Any]]) -> dict[str, str]:
    """Each training family's half, ``teacher`` or ``students``: whole families in the order
    of a hash of their keys go to the teachers until they hold half of the training faces, the
    rest (at least one family) to the students - a fixed rule, so a teacher trained on one half
    has seen no design its students train on."""
    sizes = _family_sizes([face for face in faces if face["split"] == "train"])
    order = _hash_order(sizes)
    half, filled, halves = sum(sizes.values()) / 2, 0, {}
    for position, key in enumerate(order):
        teacher = position < len(order) - 1 and (filled == 0 or filled < half)
        halves[key] = "teacher" if teacher else "students"
        filled += sizes[key] if teacher else 0
    return halves


def split_counts(faces: list[dict[str, Any]], renders: int) -> dict[str, Any]:
    """Families, faces and images in each split, for the manifest's counts."""
    counts = {}
    for name in SPLITS:
        chosen = [f for f in faces if f["split"] == name]
        counts[name] = {"families": len({f["key"] for f in chosen}), "faces": len(chosen),
                        "images": len(chosen) * renders * len(CHARACTERS)}
    return counts


def write_listing(folder: Path, manifest: dict[str, Any], test_fraction: float,
                  val_fraction: float) -> None:
    """``split1-test0.2-val0.1.json`` in ``folder``: which font is in which split, and the
    counts; written once per split version and pair of fractions (a read-only cache is left as
    it is)."""
    path = folder / f"split{SPLIT_VERSION}-test{test_fraction:g}-val{val_fraction:g}.json"
    if path.is_file():
        return
    faces = manifest["faces"]
    listing = {name: [f"{f['file']} ({f['family']} {f['style']})".strip() for f in faces
                      if f["split"] == name] for name in SPLITS}
    body = {"test_fraction": test_fraction, "val_fraction": val_fraction,
            "counts": manifest["counts"], "fonts": listing}
    try:
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(temp, path)
    except OSError:
        pass


def _family_sizes(faces: list[dict[str, Any]]) -> dict[str, int]:
    """Faces per design group (the ``key``), in the order the groups first appear."""
    sizes: dict[str, int] = {}
    for face in faces:
        sizes[face["key"]] = sizes.get(face["key"], 0) + 1
    return sizes


def _hash_order(sizes: dict[str, int]) -> list[str]:
    """The groups in the order of a hash of their keys: fixed, yet unrelated to their names."""
    return sorted(sizes, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
