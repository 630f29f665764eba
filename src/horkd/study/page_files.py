"""Where a study page's figures and facts go: a folder named after the page, beside it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote


def figures_folder(doc_path: Path) -> Path:
    """The page's figures and facts: a folder named after the page beside it (``docs/results``
    for ``docs/results.md``), so ``--doc small_results.md`` leaves no generic ``results/``
    folder in the working directory, and two pages in one folder keep their figures apart."""
    return doc_path.parent / doc_path.stem


def figure_link(path: Path) -> str:
    """A figure's link from the page beside its folder (the folder's name URL-quoted)."""
    return f"{quote(path.parent.name)}/{quote(path.name)}"
