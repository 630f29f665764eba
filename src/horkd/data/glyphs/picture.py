"""Which glyphs a picture of the data shows: the confusable characters of a few test fonts, one
face per family, side by side (the study page draws them at HR and at every LR view)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from horkd.data.glyphs.fonts import CHARACTERS

if TYPE_CHECKING:
    from horkd.data.glyphs import GlyphImages

#: Characters shown by default: confusable pairs and triples (0/O, 1/l/I, 5/S).
SHOWN = "0O1lI5S"


def picture_columns(test: GlyphImages, columns: int = 14,
                    shown: str = SHOWN) -> tuple[list[int], list[str], str]:
    """(image indices, a title per column, what the columns are): ``shown`` in each of as many
    test fonts as ``columns`` holds (at least one; a family's first face, its first render)."""
    wanted = max(1, columns // len(shown))
    picked: list[int] = []
    fonts: list[str] = []
    seen: set[int] = set()
    for face in torch.unique_consecutive(test.faces).tolist():
        where = torch.nonzero(test.faces == face).flatten()
        family = int(test.families[where[0]])
        if family in seen:
            continue
        seen.add(family)
        labels = test.labels[where].tolist()
        # the first image of each shown character (render 0 comes first)
        picked += [int(where[labels.index(CHARACTERS.index(c))]) for c in shown]
        # the face's own family name (a design group's key may be another family's)
        fonts.append(test.face_families[face] if test.face_families else
                     test.family_names[family])
        if len(fonts) == wanted:
            break
    titles = [c for _ in fonts for c in shown]
    what = (f"the characters {' '.join(shown)} of the test font"
            + ("s " if len(fonts) > 1 else " ") + ", ".join(f"`{f}`" for f in fonts)
            + ", left to right (design groups no network trained or validated on)")
    return picked, titles, what
