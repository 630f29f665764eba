"""horkd: hybrid order relational knowledge distillation for cross-resolution recognition."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Recogniser", "__version__"]


def __getattr__(name: str) -> Any:
    """``from horkd import Recogniser`` without importing torch for ``horkd --help``."""
    if name == "Recogniser":
        from horkd.inference import Recogniser

        return Recogniser
    raise AttributeError(f"module 'horkd' has no attribute {name!r}")
