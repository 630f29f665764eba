"""``glyphs``: the 62 characters 0-9, A-Z, a-z rendered from real font files, split by font
family so the test fonts are designs no network trained or validated on.

The fonts are those under ``data.root`` or, without one, the system's (``make glyphs`` installs
a pinned set of Debian's font packages). The set is rendered once into a cache
(:mod:`horkd.data.glyphs.cache`); its data digest is the digest of the font files. Which faces
it keeps is decided in :mod:`horkd.data.glyphs.selection`, which font goes where in
:mod:`horkd.data.glyphs.splits`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from horkd.data.digest import DATA_FILES, DATA_VERSIONS
from horkd.data.glyphs.cache import GlyphSet, load_glyphs
from horkd.data.glyphs.fonts import CHARACTERS, font_files
from horkd.data.glyphs.messages import set_summary, too_few_families
from horkd.data.glyphs.render import RENDER_VERSION
from horkd.data.glyphs.selection import rules_digest
from horkd.data.glyphs.splits import MIN_FAMILIES, SPLIT_VERSION, font_halves
from horkd.data.memory import TensorImageDataset, channel_stats
from horkd.data.registry import DATASETS, DataNotFoundError, DatasetInfo

DEFAULT_SIDE = 32


class GlyphImages(TensorImageDataset):
    """Glyph images with the font face (``faces``, indices into the manifest's faces, whose
    family names are ``face_families``) and the design group of each (``families``, indices
    into ``family_names``, the groups' keys), so data can be split by design;
    ``validation_indices`` (train split only) are the images of the validation fonts, which
    ``build_splits`` holds out whole; ``drawn_from`` (train split only) says in words what whole
    set the splits come from, for the results page."""

    def __init__(self, images: Tensor, labels: Tensor, faces: Tensor, families: Tensor,
                 family_names: list[str], validation_indices: Tensor | None = None,
                 face_families: list[str] | None = None, drawn_from: str | None = None) -> None:
        super().__init__(images, labels)
        self.drawn_from = drawn_from
        self.faces = faces
        self.families = families
        self.family_names = family_names
        self.validation_indices = validation_indices
        self.face_families = face_families

    def composition(self, indices: Tensor) -> str:
        """What the images at ``indices`` are drawn from, as the page says it: the faces and
        design groups behind them."""
        faces, groups = self.faces[indices].unique().numel(), self.families[indices].unique().numel()
        return f"{faces} faces in {groups} design groups"

    def picture_columns(self, columns: int = 14) -> tuple[list[int], list[str], str]:
        """What a picture of this split shows: see
        :func:`horkd.data.glyphs.picture.picture_columns`."""
        from horkd.data.glyphs.picture import picture_columns

        return picture_columns(self, columns)


def _datasets(glyphs: GlyphSet, fonts: str = "all") -> tuple[GlyphImages, GlyphImages]:
    """Training (with the validation fonts held apart) and test images; ``fonts`` other than
    ``all`` keeps that half of the training families (``font_halves``) and every validation
    font."""
    split = glyphs.split_of_images()
    keys = [face["key"] for face in glyphs.manifest["faces"]]
    drawn_from = f"the glyph set of {set_summary(glyphs.manifest)}"
    if fonts != "all":
        halves = font_halves(glyphs.manifest["faces"])
        other = np.array([halves.get(k) not in (None, fonts) for k in keys])[glyphs.faces]
        split = np.where(other, "other", split)
        drawn_from += "; its training groups halved: " + _halves(glyphs.manifest["faces"], halves)
    names = sorted(set(keys))
    family = np.array([names.index(k) for k in keys], dtype=np.int64)[glyphs.faces]
    images = torch.from_numpy(glyphs.images).unsqueeze(1)
    labels, families = torch.from_numpy(glyphs.labels), torch.from_numpy(family)
    faces = torch.from_numpy(glyphs.faces)

    def part(mask: np.ndarray, val: np.ndarray | None = None) -> GlyphImages:
        index = torch.from_numpy(np.flatnonzero(mask))
        held = None if val is None else torch.from_numpy(np.flatnonzero(val[mask]))
        return GlyphImages(images[index], labels[index], faces[index], families[index], names,
                           held, [face["family"] for face in glyphs.manifest["faces"]],
                           drawn_from if val is not None else None)

    return part(np.isin(split, ("train", "val")), split == "val"), part(split == "test")


def _halves(faces: list[dict], halves: dict[str, str]) -> str:
    """The two halves of the training design groups in words: groups and faces of each."""
    parts = []
    for half, name in (("teacher", "the teachers'"), ("students", "the students'")):
        keys = {k for k, h in halves.items() if h == half}
        count = sum(face["key"] in keys for face in faces)
        parts.append(f"{name} {len(keys)} ({count} faces)")
    return ", ".join(parts)


@DATASETS.register("glyphs")
def glyphs(
    root: str | None,
    hr_size: int | None,
    download: bool = False,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    glyph_renders: int = 4,
    glyph_min_families: int = 20,
    glyph_fonts: str = "all",
):
    """0-9, A-Z, a-z (62 classes) rendered from the fonts under ROOT (or the system's), at
    ``hr_size`` (default 32) px, ``glyph_renders`` varied renders per font; whole families go
    to test (``test_fraction`` of the faces) and validation (``val_fraction``);
    ``glyph_fonts`` ``teacher`` or ``students`` trains on that half of the training families."""
    side = hr_size or DEFAULT_SIDE
    found = load_glyphs(root, side, glyph_renders, test_fraction, val_fraction)
    short = too_few_families(found.manifest["counts"], max(MIN_FAMILIES, glyph_min_families), root)
    if short:
        raise DataNotFoundError(short)
    train, test = _datasets(found, glyph_fonts)
    if train.validation_indices is not None and len(train) == len(train.validation_indices):
        groups = found.manifest["counts"]["train"]["families"]
        raise DataNotFoundError(
            f"glyphs: data.glyph_fonts={glyph_fonts} takes half of the training fonts' design "
            f"groups, and {groups} cannot be halved: add fonts of other families, or "
            "data.glyph_fonts=all")
    mean, std = channel_stats(train.images)
    info = DatasetInfo("glyphs", len(CHARACTERS), 1, mean, std, side, list(CHARACTERS))
    return train, test, info


@DATA_FILES.register("glyphs")
def _font_files(root: str | None) -> list[Path]:
    return font_files(root)


@DATA_VERSIONS.register("glyphs")
def _set_version() -> str:
    """A new make of the same fonts (other drawing, other faces kept, other design groups, other
    split) is new data: the drawing's version, a digest of the rules that choose and group
    faces, and the split's version."""
    return f"{RENDER_VERSION}:{rules_digest()}:split{SPLIT_VERSION}"


__all__ = ["CHARACTERS", "GlyphImages", "GlyphSet", "glyphs", "load_glyphs"]
