"""Which files of an image folder without a test split are held out as one: a rule of each file's
own name, torch- and torchvision-free so that the data digest (which names the rule) is the same
whichever modules a command imported (``horkd study --status`` reads no image)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from horkd.data.digest import SPLIT_RULES

HELD_OUT_RULE = "test_share(class/path) < test_fraction"  # in the data digest: see SPLIT_RULES


def test_share(relative: str) -> float:
    """Where a file falls in [0, 1), from its path under the tree (``<class>/<name>``) alone: it
    is held out for testing when this is below ``data.test_fraction``.

    Why by name: a split drawn over the list of files moves other files between train and test
    whenever one is added, removed or found unreadable, so a test score would no longer be
    comparable with the last run's; and raising the fraction only moves files into the test split.
    """
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@SPLIT_RULES.register("image_folder")
def split_rule(root: str) -> str | None:
    """The held-out rule where ``root`` has no test split of its own (see :data:`SPLIT_RULES`)."""
    base = Path(root)
    return None if any((base / n).is_dir() for n in ("test", "val")) else HELD_OUT_RULE
