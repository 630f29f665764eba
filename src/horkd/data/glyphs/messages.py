"""What a user is told, in one line, when the fonts cannot make a glyph set a run would take:
where it looked and what to do (``make glyphs`` for the system's fonts; for a folder of one's
own, which fonts to add or which setting to lower).

Kept apart from loading and splitting so the wording, the one part a user reads, is in one place,
and the command that renders the set (``python -m horkd.data.glyphs``) says the same as a run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from horkd.data.glyphs.fonts import UNREAD_EXTENSIONS, font_files
from horkd.data.glyphs.splits import MIN_FAMILIES

#: The command that installs the fonts the study's glyph set is rendered from.
INSTALL_HINT = "run `make glyphs` (installs Debian's font packages and renders the set)"


def no_fonts_message(root: str | None) -> str:
    """Why no font was found, and what to do: ``make glyphs`` fills the system's folders only,
    so a folder of one's own is told to hold fonts (or to be left out)."""
    if not root:
        return f"glyphs: no .ttf/.otf/.ttc font file in the system's font folders; {INSTALL_HINT}"
    unset = "or leave data.root unset for the system's fonts"
    if not Path(root).exists():
        return (f"glyphs: the font folder {root} does not exist; give a folder of .ttf/.otf/.ttc "
                f"files, {unset}")
    unread = unread_fonts(root)
    if unread:
        return (f"glyphs: no .ttf/.otf/.ttc font file under {root}, only {unread}; convert "
                f"them to .ttf or .otf, {unset}")
    return (f"glyphs: no .ttf/.otf/.ttc font file under {root}; put font files there (sub-folders are "
            f"read too), {unset}")


def set_summary(manifest: dict[str, Any]) -> str:
    """The whole set in one phrase - files read, faces kept, design groups, and what was left
    out and why - as the render command prints it and the results page states it."""
    counts = manifest["counts"]
    left_out = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in counts["excluded"].items())
    return (f"{counts['font_files']} font files: {counts['usable_faces']} usable faces in "
            f"{counts['families']} design groups (left out: {left_out})")


def lopsided_splits(manifest: dict[str, Any], fractions: dict[str, float]) -> list[str]:
    """A line for each held-out split (``{"test": 0.2, "val": 0.1}``) whose share of the faces
    is well over the one asked: splits take whole design groups, so one large group (a
    superfamily of a font folder of one's own) can fill most of a split, and a user should hear
    it before training on what is left."""
    faces = manifest["faces"]
    lines = []
    for name, fraction in fractions.items():
        held = [face for face in faces if face.get("split") == name]
        share = len(held) / max(1, len(faces))
        if not held or share <= 1.5 * fraction + 0.05:
            continue
        largest, size = Counter(face["key"] for face in held).most_common(1)[0]
        lines.append(f"the {name} fonts are {share:.0%} of the faces ({fraction:.0%} asked): "
                     f"splits take whole design groups, and `{largest}` alone has "
                     f"{size} faces; add fonts of other designs for shares nearer "
                     "the ones asked")
    return lines


def variable_fonts(faces: list[dict[str, Any]]) -> str | None:
    """A line when some kept faces are variable fonts (one face each: their default instance),
    so a folder of variable fonts is not mistaken for one of few designs; None when none."""
    from horkd.data.glyphs.fonts import is_variable

    variable = [face["file"] for face in faces if is_variable(face["file"])]
    if not variable:
        return None
    first = ", ".join(Path(name).name for name in variable[:3])
    return (f"{len(variable)} variable font{'s' if len(variable) != 1 else ''} ({first}"
            f"{', ...' if len(variable) > 3 else ''}): each is drawn at its default instance "
            "only; add static cuts for its other weights and widths")


def other_sets(folder: Path) -> str | None:
    """A line naming the glyph sets cached beside ``folder`` (other fonts, sides, renders or
    horkd versions) and the disk they take, so a user can remove those no run needs; each is
    well over a hundred megabytes at 32 px."""
    others = [p for p in folder.parent.iterdir() if p.is_dir() and p != folder]
    if not others:
        return None
    size = sum(f.stat().st_size for p in others for f in p.rglob("*") if f.is_file())
    return (f"{len(others)} other glyph set{'s' if len(others) != 1 else ''} cached beside this "
            f"one ({size / 2**20:,.0f} MiB in {folder.parent}): remove any no run needs")


def unread_fonts(root: str | None) -> str | None:
    """The font files under ``root`` of kinds the set does not read, counted with their kinds
    ("3 font files of other kinds (.pfb, .woff)"); None when there are none."""
    unread = font_files(root, UNREAD_EXTENSIONS)
    if not unread:
        return None
    kinds = ", ".join(sorted({path.suffix.lower() for path in unread}))
    files = "font file" + ("s" if len(unread) != 1 else "")
    return f"{len(unread)} {files} of other kinds ({kinds})"


def too_few_families(counts: dict[str, Any], wanted: int, root: str | None) -> str | None:
    """One line when the set holds fewer than ``wanted`` families (None when enough): the
    system's fonts are installed by ``make glyphs``; a folder of one's own needs fonts of more
    families, or a lower floor where it can still split (3: train, validation, test)."""
    families = counts["families"]
    if families >= wanted:
        return None
    where = root or "the system's font folders"
    what = (f"glyphs: {counts['usable_faces']} usable faces in {families} design groups "
            f"(families of one design count once) in {where} (at least {wanted} wanted: "
            "data.glyph_min_families)")
    if not root:
        return f"{what}; {INSTALL_HINT}"
    lower = (f", or set data.glyph_min_families={families} to split these"
             if families >= MIN_FAMILIES else "")
    return f"{what}; add fonts of other families to {root}{lower}"
