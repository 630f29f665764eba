"""A picture of what the glyph networks see: characters of a few test fonts at HR and as the
LR images the students get, side by side (the study page shows it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from horkd.data.glyphs import GlyphImages
from horkd.data.glyphs.fonts import CHARACTERS
from horkd.degrade import Degrader, DegradeSpec

#: Characters shown by default: the confusable ones first.
SHOWN = "0O1lI5SZ2B8gqae"


def glyph_grid(test: GlyphImages, lr: DegradeSpec, fonts: int = 6, shown: str = SHOWN,
               scale: int = 2) -> np.ndarray:
    """uint8 ``[H, W]``: for each of up to ``fonts`` test fonts (one face per family, its first
    render), a row of HR characters and below it the same characters at LR, enlarged to the HR
    side (nearest) so a reader sees the pixels the student sees."""
    rows = []
    side = test.images.shape[-1]
    degrade = Degrader(side, lr)
    seen_families: set[int] = set()
    for face in torch.unique_consecutive(test.faces).tolist():
        where = torch.nonzero(test.faces == face).flatten()
        family = int(test.families[where[0]])
        if family in seen_families:
            continue
        seen_families.add(family)
        picked = where[[CHARACTERS.index(c) for c in shown]]  # render 0 comes first
        hr = test.images[picked].float() / 255.0
        low = degrade(hr, generator=torch.Generator().manual_seed(0))
        up = torch.nn.functional.interpolate(low, size=(side, side), mode="nearest")
        for batch in (hr, up):
            rows.append(torch.cat(list(batch[:, 0].clamp(0, 1)), dim=1))
        if len(seen_families) == fonts:
            break
    grid = (torch.cat(rows, dim=0) * 255).round().to(torch.uint8).numpy()
    return np.kron(grid, np.ones((scale, scale), dtype=np.uint8))


def write_glyph_grid(test: GlyphImages, path: str | Path, lr: DegradeSpec, fonts: int = 6,
                     shown: str = SHOWN) -> Path:
    """:func:`glyph_grid` as a PNG at ``path``; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(glyph_grid(test, lr, fonts, shown)).save(path)
    return path
