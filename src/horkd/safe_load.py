"""Pickled weight files (``.pth``/``.pt``) without running code from them.

``torch.load(weights_only=True)`` accepts tensors and plain containers only; a pickle naming any
other global (the way a payload that runs code works) is refused before anything executes. Users
who know a file can lift that for one command (``--trust-checkpoint``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UnsafeCheckpointError(ValueError):
    """A pickle that needs more than tensors to load: unpickling it could run code."""


_TRUST_PICKLES = contextvars.ContextVar("horkd_trust_pickles", default=False)


@contextmanager
def trusting_pickles(enabled: bool = True) -> Iterator[None]:
    """Let pickled weight files that need full unpickling load (``--trust-checkpoint``)."""
    token = _TRUST_PICKLES.set(enabled)
    try:
        yield
    finally:
        _TRUST_PICKLES.reset(token)


def load_pickled_weights(path: Path) -> object:
    """``torch.load`` restricted to tensors and containers unless the user trusts the file.

    ``weights_only=True`` refuses every global a pickle names beyond tensors, so a payload that
    would run code is rejected before anything executes.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((line for line in lines if "unsupported global" in line.lower()), "")
        if not detail:  # not a forbidden object, just not a pickle of weights
            raise
        if not _TRUST_PICKLES.get():
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it is a pickle that holds more than tensors, and "
                f"unpickling it could run code from the file{f' ({detail.strip()})' if detail else ''}. "
                "Convert it to safetensors, or pass --trust-checkpoint if you trust its source"
            ) from None
    return torch.load(path, map_location="cpu", weights_only=False)
