"""Which font files a glyph set is rendered from, and what each face is: its family (the unit of
the train / validation / test split) and whether it draws all 62 characters.

A face's family is its typographic family name with weight, width, slope, optical-size and
sans / serif / mono words taken out, so the Bold, Italic, Condensed and Mono faces of one design
land in the same split (a test font the networks never saw means a test *design*, not a test
weight or cut of a known one). Families are then joined into design groups, the split's unit
(:mod:`horkd.data.glyphs.designs`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: The 62 classes, in label order: digits, capitals, small letters.
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")
COLLECTIONS = (".ttc", ".otc")  # several faces in one file (a family's weights, often)
#: Font files of kinds not read (web, PostScript Type 1, bitmap): named, so none is lost unsaid.
UNREAD_EXTENSIONS = (".woff", ".woff2", ".pfb", ".pfa", ".t1", ".dfont", ".otb", ".pcf", ".bdf")
#: Where a system keeps its fonts when no ``data.root`` is given.
SYSTEM_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
STYLE_WORDS = frozenset("""
    regular book roman normal plain medium bold bolder semibold demibold demi semi extrabold
    ultrabold heavy black extrablack ultrablack light extralight ultralight thin hairline
    italic oblique slanted inclined cursive kursiv upright
    condensed semicondensed extracondensed ultracondensed compressed narrow wide expanded
    extended semiexpanded
    display text caption subhead poster titling small micro
    extra ultra var variable vf caps smallcaps sc
    sans serif mono monospace monospaced slab roman code std pro lt
""".split())
#: Glyph names that only number a glyph (say nothing of what it draws).
NUMBERED_GLYPH = r"(?i:glyph|gid|cid|char|index|g|c)?[._]?\d+"


@dataclass(frozen=True)
class Face:
    """One font file: its path, the names it gives itself and the family key it is split by."""

    path: Path
    family: str  # the typographic family name as the font gives it
    style: str  # its subfamily ("Bold Italic")
    key: str  # the family key: lower case, style and size words out


def font_files(root: str | Path | None, extensions: tuple[str, ...] = FONT_EXTENSIONS) -> list[Path]:
    """Every ``.ttf``/``.otf``/``.ttc``/``.otc`` file (or of ``extensions``) under ``root`` (the
    system's font folders when ``None``), links followed and each real file once, in a fixed
    order."""
    places = [Path(root)] if root else [p for p in SYSTEM_FONT_DIRS if p.is_dir()]
    seen: dict[str, Path] = {}
    for place in places:
        if place.is_file():
            candidates = [place]
        else:
            candidates = [Path(folder) / name
                          for folder, _, names in os.walk(place, followlinks=True)
                          for name in names]
        for path in candidates:
            if path.suffix.lower() in extensions and path.is_file():
                seen.setdefault(os.path.realpath(path), path)
    return sorted(seen.values())


def family_key(family: str) -> str:
    """``"DejaVu Sans Condensed"``, ``"DejaVu Sans Mono"`` and ``"DejaVu Serif"`` -> ``"dejavu"``;
    ``"LM Roman 10"`` -> ``"lm"``: faces of one design share a key, whatever weight, width,
    optical size, and sans / serif / mono cut of a superfamily (these share letterforms, so a
    test font is a design no training font shares). A style word run into the name is found
    too: ``"OCRACondensed"`` and ``"OpenDyslexicMono"`` are ``"ocra"`` and ``"opendyslexic"``."""
    words = []
    for word in re.findall(r"[A-Za-z0-9]+", family):
        parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", word)  # OCRA|Condensed
        kept = [p for p in (p.lower() for p in parts) if p not in STYLE_WORDS]
        words.append("".join(kept) if len(parts) > 1 else word.lower())
    kept = [w for w in words if w and w not in STYLE_WORDS and not re.fullmatch(r"(no)?\d+", w)]
    return " ".join(kept or [w.lower() for w in re.findall(r"[A-Za-z0-9]+", family)]) \
        or family.lower()


MAX_COLLECTION_FACES = 256  # more than any real collection holds; a larger count is damage


def faces_in(path: Path) -> list[int]:
    """The face numbers of a font file: ``[0]``, or one per face of a collection (its header
    says how many; an unreadable header, or a count its offset table cannot hold in the file,
    gives ``[0]``, left out when the face is read)."""
    if path.suffix.lower() not in COLLECTIONS:
        return [0]
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
        size = path.stat().st_size
    except OSError:
        return [0]
    if header[:4] != b"ttcf" or len(header) < 12:
        return [0]
    count = int.from_bytes(header[8:12], "big")
    if not 1 <= count <= MAX_COLLECTION_FACES or 12 + 4 * count > size:  # a damaged header
        return [0]
    return list(range(count))


def face_name(path: Path | str, index: int) -> str:
    """How a face is named in listings: its file, with ``#N`` for a collection's faces."""
    return f"{path}#{index}" if Path(path).suffix.lower() in COLLECTIONS else str(path)


def read_face(path: Path, index: int = 0) -> tuple[Face, str, str]:
    """Face ``index`` of ``path`` (a collection's; 0 otherwise), the characters of the 62 its character map lacks, and those whose
    glyph the font names as something else (:func:`named_otherwise`; each '' when none).

    Raises ``OSError`` (or a parser error) for a file that is not a readable font.
    """
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True, fontNumber=index) as font:
        cmap = font.getBestCmap() or {}
        names = font["name"]
        family = names.getBestFamilyName() or path.stem
        style = names.getBestSubFamilyName() or ""
    missing = "".join(c for c in CHARACTERS if ord(c) not in cmap)
    others = named_otherwise({c: cmap[ord(c)] for c in CHARACTERS if ord(c) in cmap})
    return Face(path, family, style, family_key(family)), missing, others


def is_variable(name: str) -> bool:
    """Whether the face a listing names (``file`` or ``file#N``) is a variable font: Pillow
    draws its default instance only, so its other weights and widths are not in the set."""
    from fontTools.ttLib import TTFont

    path, _, index = name.partition("#")
    try:
        with TTFont(path, lazy=True, fontNumber=int(index or 0)) as font:
            return "fvar" in font
    except Exception:  # noqa: BLE001 - a file that cannot be read again is not variable here
        return False


def named_otherwise(glyphs: dict[str, str]) -> str:
    """The characters whose glyph name (``{"A": "Alpha"}``) says it draws something else: a name
    the Adobe Glyph List reads as another character, or one it cannot read that is no mere glyph
    number. A symbol font maps the Latin code points to Greek (``Alpha``), dingbats (``a105``)
    or maths (``prime``) this way; a text font names its letters as letters, its variants with a
    suffix (``a.ss01``), or by number (``glyph36``, ``cid00034``). Private-use readings
    (``zerooldstyle``) are variants of the character, not others."""
    from fontTools.agl import toUnicode

    def other(char: str, name: str) -> bool:
        read = toUnicode(name)
        if read == char or re.fullmatch(NUMBERED_GLYPH, name):
            return False
        return not (len(read) == 1 and 0xE000 <= ord(read) <= 0xF8FF)

    return "".join(c for c, name in glyphs.items() if other(c, name))
