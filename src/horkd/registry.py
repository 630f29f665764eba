"""Name -> factory registries, so a YAML name selects a loss, model, method or dataset in one place."""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

#: The type of a registry's entries (a factory, a spec).
T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A config asked for a name no registry entry has; the message lists the known ones.

    Both a :class:`KeyError` (a missing key) and a :class:`ValueError` (a bad config value), so
    callers catching either see it.
    """

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable.
        return str(self.args[0])


def closest_name(name: str, known: list[str]) -> str | None:
    """The most similar known name; ties go to the longest shared prefix (typos sit late).

    Args:
        name: What was asked for.
        known: The names that exist.

    Returns:
        The closest of ``known`` (case-insensitive), or ``None`` when none is similar enough
        (a similarity ratio below 0.6) or ``known`` is empty.
    """

    def score(candidate: str) -> tuple[float, int]:
        ratio = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        prefix = len(os.path.commonprefix([name.lower(), candidate.lower()]))
        return ratio, prefix

    best = max(known, key=score, default=None)
    return best if best is not None and score(best)[0] >= 0.6 else None


class Registry(Generic[T]):
    """A dict of named factories filled by decorators.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(): ...

    Iterating or ``in`` goes over the names; :meth:`get` gives an entry.

    Args:
        kind: What the entries are, for the messages (``"model"``, ``"method"``, ``"dataset"``).
        lazy: Names whose module registers them on import (name -> module), imported at the
            first :meth:`get` of one of its names: naming, listing and checking a name import
            nothing, so validating a config does not pay for a slow module (torchvision).
    """

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy = dict(lazy or {})

    def _import(self, name: str) -> None:
        """The module that registers ``name``, imported (once) if it has not been."""
        module = self._lazy.get(name)
        if module is not None and name not in self._entries:
            importlib.import_module(module)  # a failed import keeps the names (and says why)
            for declared in [n for n, m in self._lazy.items() if m == module]:
                del self._lazy[declared]

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds its object under ``name`` and returns the object unchanged.

        Args:
            name: The name configs select it by.

        Returns:
            The decorator.

        Raises:
            ValueError: ``name`` is registered already (raised when the decorator is applied).
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> T:
        """Remove an entry (a plugin or a test taking back what it registered).

        Args:
            name: The entry's name.

        Returns:
            The removed entry.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        self._import(name)
        if name not in self._entries:
            raise UnknownNameError(f"{self.kind} '{name}' is not registered")
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry registered under ``name``.

        Args:
            name: The entry's name.

        Returns:
            The entry.

        Raises:
            UnknownNameError: ``name`` is not registered; the message suggests the closest
                known name and lists them all.
        """
        self.check(name)
        self._import(name)
        return self._entries[name]

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` as :meth:`get` does, importing nothing.

        Args:
            name: The entry's name.
        """
        if name not in self:
            known = self.names()
            close = closest_name(name, known)
            hint = f" Did you mean '{close}'?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(known)}"
            )

    def names(self) -> list[str]:
        """The registered names (those of modules not imported yet included), sorted."""
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
