"""Searches that score each candidate on several seeds and, where the choice sits at an end of
a one-knob numeric grid, extend the grid until it is bracketed (filled in below)."""

from __future__ import annotations

from typing import Any


def search_seeds(study: Any) -> list[int]:
    """The seeds every search candidate is trained with: ``search.seeds``, else ``search.seed``
    alone."""
    return list(study.search.seeds or [study.search.seed])
