"""The glyph set rendered once and kept: uint8 images, labels, the face of each image, and a
manifest of which font went where and which were left out, keyed by a digest of the font files.

Every run that reads the same fonts at the same settings reads the same images; changing, adding
or removing a font file changes the digest, so the set is rendered anew (and, through the data
digest, every stage that learnt from the old set is retrained).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from horkd.data.digest import _content_digest, data_digest
from horkd.data.glyphs.designs import design_groups, near_twins
from horkd.data.glyphs.fonts import (
    CHARACTERS,
    UNREAD_EXTENSIONS,
    face_name,
    faces_in,
    font_files,
    read_face,
)
from horkd.data.glyphs.render import RENDER_VERSION, FaceRenderer, face_seed, small_as_capitals
from horkd.data.registry import DataNotFoundError
from horkd.run_lock import waiting_lock

#: The command that installs the fonts the study's glyph set is rendered from.
INSTALL_HINT = "run `make glyphs` (installs Debian's font packages and renders the set)"
CACHE_ENV = "HORKD_CACHE_DIR"
MIN_FAMILIES = 3  # the fewest that split: one family each for train, validation and test
SMALL_CAPITALS_LIMIT = 18  # more small letters shaped as their capital: a small-caps face
CAPITALS_SIDE = 32  # the side the small-caps test draws at (whatever the set's)
POOL_FROM = 32  # font files from which rendering is spread over processes by default
INDISTINCT_LIMIT = 8  # more identical character pairs than this: capitals drawn for small letters
OTHER_NAMES_LIMIT = 8  # more glyphs named as other characters than this: a symbol font



def rules_digest() -> str:
    """A digest of every setting that decides which faces a set keeps and how they group: part
    of the set's version (and so of its data digest and its cache folder), so changing a rule
    remakes the set and retrains the stages that learnt from the old one, with no version to
    remember to raise by hand."""
    from horkd.data.glyphs import designs, fonts, render

    rules = [sorted(fonts.STYLE_WORDS), sorted(designs.COMMON_WORDS), designs.NEAR_TWIN,
             fonts.NUMBERED_GLYPH, fonts.CHARACTERS, SMALL_CAPITALS_LIMIT, CAPITALS_SIDE,
             INDISTINCT_LIMIT, OTHER_NAMES_LIMIT, render.FILL, render.SUPERSAMPLE,
             render.SMALL_CAPS_SIDE, render.SMALL_CAPS_OVERLAP]
    return hashlib.sha256(json.dumps(rules).encode()).hexdigest()[:12]


@dataclass
class GlyphSet:
    """``images`` uint8 ``[N, side, side]``, ``labels`` int64 ``[N]`` (index into
    ``CHARACTERS``), ``faces`` int64 ``[N]`` (index into ``manifest["faces"]``)."""

    images: np.ndarray
    labels: np.ndarray
    faces: np.ndarray
    manifest: dict[str, Any]
    folder: Path

    def split_of_images(self) -> np.ndarray:
        """Each image's split name (``train``, ``val`` or ``test``), by its face's family."""
        names = np.array([face["split"] for face in self.manifest["faces"]])
        return names[self.faces]


def cache_root() -> Path:
    """``$HORKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/horkd``, else ``~/.cache/horkd``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "horkd"


def load_glyphs(
    root: str | None,
    side: int = 32,
    renders: int = 4,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    processes: int | None = None,
) -> GlyphSet:
    """The glyph set of the fonts under ``root`` (the system's when ``None``): read from the
    cache, or rendered (``processes`` workers; default up to 8) and cached first."""
    files = font_files(root)
    if not files:
        raise DataNotFoundError(no_fonts_message(root))
    digest = data_digest("glyphs", root)
    settings = {"fonts": digest, "side": side, "renders": renders, "version": RENDER_VERSION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / "glyphs" / f"{side}px-{renders}r-{key}"
    if not (folder / "manifest.json").is_file():
        with waiting_lock(folder.with_name(folder.name + ".lock")):
            if not (folder / "manifest.json").is_file():
                _write(folder, render_set(files, side, renders, processes), settings)
    found = _read(folder)
    _assign_splits(found.manifest["faces"], test_fraction, val_fraction)
    found.manifest["counts"].update(_split_counts(found.manifest["faces"], renders))
    _write_split(found, test_fraction, val_fraction)
    return found


def no_fonts_message(root: str | None) -> str:
    """Why no font was found, and what to do: ``make glyphs`` fills the system's folders only,
    so a folder of one's own is told to hold fonts (or to be left out)."""
    if not root:
        return f"glyphs: no .ttf/.otf/.ttc font file in the system's font folders; {INSTALL_HINT}"
    unset = "or leave data.root unset for the system's fonts"
    if not Path(root).exists():
        return (f"glyphs: the font folder {root} does not exist; give a folder of .ttf/.otf/.ttc "
                f"files, {unset}")
    unread = font_files(root, UNREAD_EXTENSIONS)
    if unread:
        kinds = ", ".join(sorted({path.suffix.lower() for path in unread}))
        return (f"glyphs: no .ttf/.otf/.ttc font file under {root}, only {len(unread)} of other "
                f"kinds ({kinds}); convert them to .ttf or .otf, {unset}")
    return (f"glyphs: no .ttf/.otf/.ttc font file under {root}; put font files there (sub-folders are "
            f"read too), {unset}")


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


def _write_split(found: GlyphSet, test_fraction: float, val_fraction: float) -> None:
    """``split-test0.2-val0.1.json`` beside the images: which font is in which split, and the
    counts; written once per pair of fractions (a read-only cache is left as it is)."""
    path = found.folder / f"split-test{test_fraction:g}-val{val_fraction:g}.json"
    if path.is_file():
        return
    faces = found.manifest["faces"]
    listing = {name: [f"{f['file']} ({f['family']} {f['style']})".strip() for f in faces
                      if f["split"] == name] for name in ("train", "val", "test")}
    body = {"test_fraction": test_fraction, "val_fraction": val_fraction,
            "counts": found.manifest["counts"], "fonts": listing}
    try:
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(temp, path)
    except OSError:
        pass


def render_set(
    files: list[Path], side: int, renders: int, processes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Render every usable face; leave out (and count) unreadable ones, those lacking any of
    the 62 characters, symbol fonts (glyphs named as other characters), those drawing capitals
    for small letters (the same, or smaller: small caps), and duplicates of an earlier face (the same plain bitmaps)."""
    start = time.perf_counter()
    jobs = [(str(path), index, side, renders) for path in files for index in faces_in(path)]
    # a pool pays off for a system's hundreds of fonts, not for a handful
    workers = processes or (min(8, os.cpu_count() or 1) if len(jobs) >= POOL_FROM else 1)
    workers = max(1, min(workers, len(jobs)))
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
            results = pool.map(_render_face, jobs, chunksize=4)
    else:
        results = [_render_face(job) for job in jobs]
    excluded: dict[str, list[dict[str, str]]] = {
        "unreadable": [], "missing_characters": [], "other_characters": [], "indistinct": [],
        "small_capitals": [], "duplicate": []}
    kept, seen = [], {}
    for (path, index, _, _), result in zip(jobs, results, strict=True):
        status, name = result["status"], face_name(path, index)
        if status != "ok":
            excluded[status].append({"file": name, "why": result["why"]})
        elif result["plain"] in seen:
            excluded["duplicate"].append({"file": name, "why": f"same as {seen[result['plain']]}"})
        else:
            seen[result["plain"]] = name
            kept.append(result)
    faces = [dict(r["face"], images=len(r["images"])) for r in kept]
    # the split's unit: designs that share a name word, or draw nearly the same letters, go to
    # one side together
    shapes = np.stack([r["shape"] for r in kept]) if kept else np.zeros((0, 1), np.uint8)
    twins = near_twins(shapes, len(CHARACTERS) * CAPITALS_SIDE * CAPITALS_SIDE)
    groups = design_groups([(f["family"], f["key"]) for f in faces],
                           [(faces[i]["key"], faces[j]["key"]) for i, j in twins])
    for face in faces:
        face["key"] = groups[face["key"]]
    per_face = renders * len(CHARACTERS)
    images = np.concatenate([r["images"] for r in kept]) if kept else np.zeros((0, side, side),
                                                                             np.uint8)
    labels = np.tile(np.arange(len(CHARACTERS)), renders * len(kept)).astype(np.int64)
    face_index = np.repeat(np.arange(len(kept)), per_face).astype(np.int64)
    manifest = {
        "characters": CHARACTERS, "side": side, "renders": renders,
        "faces": faces, "excluded": excluded,
        "counts": {"font_files": len(files), "usable_faces": len(faces),
                   "families": len({f["key"] for f in faces}),
                   "excluded": {k: len(v) for k, v in excluded.items()}},
        "seconds": round(time.perf_counter() - start, 1), "processes": workers,
    }
    return images, labels, face_index, manifest


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _render_face(job: tuple[str, int, int, int]) -> dict[str, Any]:
    path, index, side, renders = job
    try:
        face, missing, others = read_face(Path(path), index)
    except Exception as exc:  # fontTools raises many kinds for a broken or foreign file
        return {"status": "unreadable", "why": f"{type(exc).__name__}: {exc}"[:200]}
    if missing:
        lacks = "all 62" if len(missing) == len(CHARACTERS) else f"{len(missing)}: {missing}"
        return {"status": "missing_characters", "why": f"lacks {lacks}"}
    try:
        renderer = FaceRenderer(path, side, index)
    except ValueError as exc:
        return {"status": "missing_characters", "why": str(exc)}
    except OSError as exc:
        return {"status": "unreadable", "why": f"{exc}"[:200]}
    plain = renderer.plain()
    digests = [hashlib.sha256(image.tobytes()).hexdigest() for image in plain]
    first: dict[str, str] = {}
    alike = [f"{c}={first.setdefault(d, c)}" for c, d in zip(CHARACTERS, digests, strict=True)
             if first.setdefault(d, c) != c]
    if len(alike) > INDISTINCT_LIMIT:
        return {"status": "indistinct",
                "why": f"{len(alike)} characters drawn like another ({' '.join(alike)})"}
    # judged at one size, so every hr_size keeps the same faces
    probe = renderer if side == CAPITALS_SIDE else FaceRenderer(path, CAPITALS_SIDE, index)
    capitals = small_as_capitals(probe.canvases)
    if len(capitals) > SMALL_CAPITALS_LIMIT:
        return {"status": "small_capitals",
                "why": f"{len(capitals)} small letters drawn as smaller capitals ({capitals})"}
    if len(others) > OTHER_NAMES_LIMIT:  # a symbol font: its 'A' is an Alpha or a dingbat
        return {"status": "other_characters",
                "why": f"its glyph names say it draws other characters for {others}"}
    stat = os.stat(path)
    content = _content_digest(path, stat.st_size, stat.st_mtime_ns)
    seed = face_seed(f"{content}#{index}" if index else content)
    return {"status": "ok", "plain": hashlib.sha256(plain.tobytes()).hexdigest(),
            # what near twins are judged on, at the probe's side
            "shape": np.packbits((plain if probe is renderer else probe.plain()) > 127),
            "face": {"file": face_name(path, index), "family": face.family, "style": face.style, "key": face.key},
            "images": renderer.varied(renders, seed)}


def _assign_splits(faces: list[dict[str, Any]], test_fraction: float, val_fraction: float) -> None:
    """Whole families to test, then validation, in an order fixed by a hash of their keys,
    until each holds its share of the faces; the rest train. At least one family each."""
    sizes: dict[str, int] = {}
    for face in faces:
        sizes[face["key"]] = sizes.get(face["key"], 0) + 1
    order = sorted(sizes, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    total, split = len(faces), {}
    targets = (("test", test_fraction, 2), ("val", val_fraction, 1))  # families left after it
    position = 0
    for name, fraction, leave in targets:
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
    sizes: dict[str, int] = {}
    for face in faces:
        if face["split"] == "train":
            sizes[face["key"]] = sizes.get(face["key"], 0) + 1
    order = sorted(sizes, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    half, filled, halves = sum(sizes.values()) / 2, 0, {}
    for position, key in enumerate(order):
        teacher = position < len(order) - 1 and (filled == 0 or filled < half)
        halves[key] = "teacher" if teacher else "students"
        filled += sizes[key] if teacher else 0
    return halves


def _split_counts(faces: list[dict[str, Any]], renders: int) -> dict[str, Any]:
    counts = {}
    for name in ("train", "val", "test"):
        chosen = [f for f in faces if f["split"] == name]
        counts[name] = {"families": len({f["key"] for f in chosen}), "faces": len(chosen),
                        "images": len(chosen) * renders * len(CHARACTERS)}
    return counts


def _write(folder: Path, rendered: tuple, settings: dict[str, Any]) -> None:
    """Into a temporary folder beside ``folder``, then renamed: a reader never sees half."""
    images, labels, faces, manifest = rendered
    manifest["settings"] = settings
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        np.save(temp / "images.npy", images)
        np.save(temp / "labels.npy", labels)
        np.save(temp / "faces.npy", faces)
        (temp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():  # a half-written set left by a killed run
            shutil.rmtree(folder)
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _read(folder: Path) -> GlyphSet:
    manifest = json.loads((folder / "manifest.json").read_text())
    return GlyphSet(np.load(folder / "images.npy"), np.load(folder / "labels.npy"),
                    np.load(folder / "faces.npy"), manifest, folder)
