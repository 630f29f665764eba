"""Drawing one face's 62 characters: a plain set (to find duplicate faces) and seeded, varied
renders (small rotation, scale and shift, stroke contrast, background noise).

Every character of a face is drawn at one size on a common baseline, so an ``o`` stays smaller
than an ``O`` and a ``p`` hangs below the line, as in a crop of real text; only the horizontal
position is centred per character. Drawing happens once per face on a canvas ``SUPERSAMPLE`` times
the HR side; each varied render is one affine warp of that canvas and an area reduction, so a
render costs far less than a font draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from horkd.data.glyphs.fonts import CHARACTERS

SUPERSAMPLE = 4
FILL = 0.8  # the tallest or widest character spans this share of the side, before variation
# bump when the drawing, or the code of a rule choosing or grouping faces, changes (the rules'
# settings are digested apart): caches of older sets are not reused,
# and (through the data digest) stages that learnt from them are trained again
RENDER_VERSION = 3  # 2: symbol and small-caps fonts left out; family names run together read apart
# 3: design groups (designs.py); the rules' own settings are digested apart (selection.rules_digest)


@dataclass(frozen=True)
class Variation:
    """Ranges the seeded per-sample variation draws from (uniform in each)."""

    rotation_deg: float = 8.0
    scale: tuple[float, float] = (0.8, 1.05)
    shift: float = 0.08  # share of the side, either way on each axis
    ink: tuple[float, float] = (0.55, 1.0)  # stroke intensity
    background: float = 0.3  # at most, and always 0.3 below the ink
    noise_std: tuple[float, float] = (0.0, 0.06)


class FaceRenderer:
    """The 62 characters of one font face (``index``: a collection's face) drawn on ``SUPERSAMPLE``-times canvases.

    Raises ``OSError`` when PIL cannot load the file, ``ValueError`` naming the characters that
    draw no ink.
    """

    def __init__(self, path: str, side: int, index: int = 0) -> None:
        from PIL import ImageFont

        self.side = side
        canvas = side * SUPERSAMPLE
        probe = ImageFont.truetype(path, size=canvas, index=index)
        boxes = [probe.getbbox(c, anchor="ls") for c in CHARACTERS]
        empty = "".join(c for c, b in zip(CHARACTERS, boxes, strict=True) if b[2] <= b[0]
                        or b[3] <= b[1])
        if empty:
            raise ValueError(f"no ink for {empty}")
        top = min(b[1] for b in boxes)
        bottom = max(b[3] for b in boxes)
        widest = max(b[2] - b[0] for b in boxes)
        size = max(4, int(canvas * canvas * FILL / max(bottom - top, widest)))
        font = ImageFont.truetype(path, size=size, index=index)
        boxes = [font.getbbox(c, anchor="ls") for c in CHARACTERS]
        middle = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
        self.canvases = [_draw(font, c, box, middle, canvas)
                         for c, box in zip(CHARACTERS, boxes, strict=True)]

    def plain(self) -> np.ndarray:
        """uint8 ``[62, side, side]``: every character unvaried (what duplicate faces share)."""
        images = [_reduce(c.astype(np.float32)) for c in self.canvases]
        return np.stack(images).round().astype(np.uint8)

    def varied(self, renders: int, seed: int, variation: Variation | None = None) -> np.ndarray:
        """uint8 ``[renders * 62, side, side]``, render-major; render ``r`` is drawn from a
        generator seeded by (``seed``, ``r``), so it never depends on other faces or renders."""
        canvases = torch.from_numpy(np.stack(self.canvases)).float().div_(255.0).unsqueeze(1)
        out = [_vary(canvases, np.random.default_rng([seed, r]), variation or Variation(),
                     self.side) for r in range(renders)]
        return np.concatenate(out)


def _draw(font, char: str, box: tuple, middle: float, canvas: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``char`` centred across the canvas on the face's common baseline (``middle``: the centre
    of the union of the 62 characters' ink, from the baseline)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (canvas, canvas), 0)
    origin = (canvas / 2 - (box[0] + box[2]) / 2, canvas / 2 - middle)
    ImageDraw.Draw(image).text(origin, char, fill=255, font=font, anchor="ls")
    return np.asarray(image)


def _reduce(canvas: np.ndarray) -> np.ndarray:
    """Area reduction by ``SUPERSAMPLE`` (a mean over each block)."""
    s = canvas.shape[0] // SUPERSAMPLE
    return canvas.reshape(s, SUPERSAMPLE, s, SUPERSAMPLE).mean(axis=(1, 3))


def _vary(canvases: torch.Tensor, rng: np.random.Generator, v: Variation,
          side: int) -> np.ndarray:
    """One varied render of every canvas ``[62, 1, S, S]`` (float in [0, 1]): a batched affine
    warp about the centre, an area reduction to ``side``, then contrast and noise."""
    n = canvases.shape[0]
    angle = np.deg2rad(rng.uniform(-v.rotation_deg, v.rotation_deg, n))
    scale = rng.uniform(*v.scale, n)
    shift = rng.uniform(-v.shift, v.shift, (n, 2)) * 2.0  # in [-1, 1] grid units
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # output grid point p -> input point A (p - shift): the inverse of rotate-scale, then shift
    theta = np.stack([
        np.stack([cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1])], axis=1),
        np.stack([-sin, cos, sin * shift[:, 0] - cos * shift[:, 1]], axis=1),
    ], axis=1)
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(canvases.shape),
                         align_corners=False)
    warped = F.grid_sample(canvases, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    ink = F.avg_pool2d(warped, SUPERSAMPLE).squeeze(1).numpy()
    fg = rng.uniform(*v.ink, (n, 1, 1))
    bg = rng.uniform(0.0, 1.0, (n, 1, 1)) * np.clip(np.minimum(v.background, fg - 0.3), 0, None)
    noise = rng.normal(0.0, 1.0, ink.shape) * rng.uniform(*v.noise_std, (n, 1, 1))
    image = np.clip(bg + (fg - bg) * ink + noise, 0.0, 1.0)
    return (image * 255.0).round().astype(np.uint8)


SMALL_CAPS_SIDE = 24  # the side each letter's ink is scaled to before a small letter and its
SMALL_CAPS_OVERLAP = 0.75  # capital are compared, and the overlap (IoU) that calls them alike


def small_as_capitals(canvases: list[np.ndarray], side: int = SMALL_CAPS_SIDE,
                      overlap: float = SMALL_CAPS_OVERLAP) -> str:
    """The small letters drawn as their capital at another size (a small-caps or titling face):
    each letter's ink, cropped to its box and scaled to ``side`` px, covers its capital's with an
    intersection over union above ``overlap``. A text face has about ten such (c o s v w x z and
    a few), a small-caps face 20 or more of the 26. A face whose letters are cut out of boxes
    (reverse video: most of each box inked) is judged on the letters, not the boxes."""
    from PIL import Image

    def crop(canvas: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(canvas > 127)
        if not len(rows):
            return np.zeros((1, 1), np.uint8)
        return canvas[rows.min():rows.max() + 1, cols.min():cols.max() + 1]

    letters = {c: crop(canvases[CHARACTERS.index(c)]) for c in CHARACTERS[10:]}
    if np.median([(box > 127).mean() for box in letters.values()]) > 0.7:
        letters = {c: crop(255 - box) for c, box in letters.items()}

    def shape(box: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(box).resize((side, side), Image.BILINEAR)) > 127

    found = []
    for capital in CHARACTERS[10:36]:
        big, small = shape(letters[capital]), shape(letters[capital.lower()])
        if (big & small).sum() > overlap * max(1, (big | small).sum()):
            found.append(capital.lower())
    return "".join(found)


def face_seed(content_digest: str, base_seed: int = 0) -> int:
    """A face's render seed from its file's content: renaming or adding fonts leaves it as is."""
    return int(hashlib.sha256(f"{base_seed}:{content_digest}".encode()).hexdigest()[:15], 16)
