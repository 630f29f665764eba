"""Design groups: the unit the glyph set's split keeps on one side, so a test font is a design
no network trained or validated on.

A family key (:func:`horkd.data.glyphs.fonts.family_key`) already joins the weights and cuts of
one family. Two more kinds of kinship join keys here: names that share a design word (``Cabin``
and ``CabinSketch``, ``Tiresias Infofont`` and ``Infofont Z``), and faces that draw nearly the same
letters under unrelated names (STIX General is a Times design, as Nimbus Roman is; Carlito is
drawn from Lato). Joining too much only makes the groups fewer; joining too little leaks a
design across the split, so the rules lean to joining.
"""

from __future__ import annotations

import re

import numpy as np

from horkd.data.glyphs.fonts import STYLE_WORDS

#: Faces whose plain 62 characters, binarised at the probe side, differ in fewer than this share
#: of their pixels draw one design. On the system fonts: STIX General against Nimbus Roman
#: 0.0008-0.014, Lato against Carlito from 0.017; unrelated designs 0.022 and more.
NEAR_TWIN = 0.02

#: Name words too common to tie two designs together (a design word must have 4+ letters):
#: generic ones, and the kinds of design many unrelated families name (Dancing Script and
#: Kaushan Script, Routed Gothic and URW Gothic, the Math cuts of two superfamilies).
COMMON_WORDS = frozenset("""
    font fonts type typeface family neue new free libre std
    math script gothic grotesk grotesque handwriting hand stencil outline shadow inline
    rounded round sketch symbol symbols
""".split())


def _design_words(name: str) -> set[str]:
    """The words of a family name or key that can name a design: camel case read apart
    (``CabinSketch``: cabin, sketch), style words and numbers out, at least 4 letters."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
    return {w.lower() for w in words} - STYLE_WORDS - COMMON_WORDS - {
        w.lower() for w in words if len(w) < 4}


def design_groups(faces: list[tuple[str, str]],
                  twins: list[tuple[str, str]] = ()) -> dict[str, str]:
    """Family key -> the key of its design group, for ``(family name, key)`` pairs: keys whose
    names share a design word, and the keys of each pair in ``twins`` (faces that draw nearly
    the same letters, :func:`near_twins`), are one group, transitively. A split by group then keeps apart
    what a split by key would leak: ``Cabin`` and ``CabinSketch``, ``Anonymous Pro`` and
    ``Anonymous Pro Minus``, ``Tiresias Infofont`` and ``Infofont Z``, ``Linux Biolinum`` and
    ``Biolinum Keyboard`` (and, coarser than needed, superfamilies such as ``Linux Libertine``
    with ``Linux Biolinum``: a test design shares no name word with a training one). The group's
    key is the first of its keys in sorted order."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: str, b: str) -> None:
        a, b = root(a), root(b)
        if a != b:
            parent[max(a, b)] = min(a, b)

    owner: dict[str, str] = {}
    for first, second in twins:
        join(first, second)
    for family, key in faces:
        root(key)
        for word in _design_words(family) | _design_words(key.title().replace(" ", "")):
            if word in owner:
                join(owner[word], key)
            else:
                owner[word] = key
    return {key: root(key) for key in parent}


def near_twins(shapes: np.ndarray, pixels: int, limit: float = NEAR_TWIN) -> list[tuple[int, int]]:
    """Index pairs of faces whose binarised plain renders (``shapes``: one packed-bit row per
    face, ``pixels`` bits each) differ in fewer than ``limit`` of their pixels."""
    pairs = []
    for i in range(len(shapes) - 1):
        pairs += [(i, i + 1 + int(j))
                  for j in np.flatnonzero(differing_bits(shapes[i + 1:], shapes[i])
                                          < limit * pixels)]
    return pairs


def differing_bits(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """How many bits each packed row of ``rows`` differs from ``row`` in: a population count
    of the XOR (numpy 2's ``bitwise_count``), not an unpacked array eight times its size - a
    folder of thousands of fonts compares millions of pairs."""
    xor = np.bitwise_xor(rows, row)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(xor).sum(axis=1, dtype=np.int64)
    return np.unpackbits(xor, axis=1).sum(axis=1, dtype=np.int64)
