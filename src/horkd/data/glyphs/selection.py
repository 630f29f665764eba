"""Which faces a glyph set keeps, and their images: every face of the font files is rendered
(spread over processes for a system's hundreds), and those that cannot serve as 62 labelled
characters are left out and counted - unreadable, lacking characters, symbol fonts, capitals
drawn for small letters (the same: indistinct; smaller: small caps) and duplicates of an earlier
face; the rest are grouped by design (:mod:`horkd.data.glyphs.designs`).

Kept apart from the cache so a reader asking "why was this font left out" finds every rule and
its setting here, beside :func:`rules_digest`, which makes those settings part of the set's
version: a changed rule remakes the set with no version to remember to raise.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from horkd.data.digest import content_digest
from horkd.data.glyphs.designs import design_groups, near_twins
from horkd.data.glyphs.fonts import CHARACTERS, face_name, faces_in, read_face
from horkd.data.glyphs.render import FaceRenderer, face_seed, small_as_capitals

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
    content = content_digest(path, stat.st_size, stat.st_mtime_ns)
    seed = face_seed(f"{content}#{index}" if index else content)
    return {"status": "ok", "plain": hashlib.sha256(plain.tobytes()).hexdigest(),
            # what near twins are judged on, at the probe's side
            "shape": np.packbits((plain if probe is renderer else probe.plain()) > 127),
            "face": {"file": face_name(path, index), "family": face.family, "style": face.style, "key": face.key},
            "images": renderer.varied(renders, seed)}
