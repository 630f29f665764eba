"""Where a study page's figures and facts go: a folder named after the page, beside it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote


def figures_folder(doc_path: Path) -> Path:
    """The page's figures and facts: a folder named after the page beside it
    (``docs/RESULTS-figures`` for ``docs/RESULTS.md``), so ``--doc small_results.md`` leaves no
    generic ``results/`` folder in the working directory and two pages in one folder keep their
    figures apart. The suffix keeps it apart from a folder of the page's bare name (a study's
    ``docs/results`` records beside ``docs/RESULTS.md``), which a case-insensitive file system
    (macOS, Windows) would make one folder."""
    return doc_path.parent / f"{doc_path.stem}-figures"


def figure_link(path: Path) -> str:
    """A figure's link from the page beside its folder (the folder's name URL-quoted)."""
    return f"{quote(path.parent.name)}/{quote(path.name)}"
