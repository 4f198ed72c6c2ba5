"""Name -> object registries filled by a decorator (SDEs, samplers, networks, datasets).

Unknown names raise a ``KeyError`` that lists every registered name, so a typo in a
config or on the command line tells the user what they could have written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A dictionary from name to a registered object plus free-form metadata.

    >>> reg = Registry("widget")
    >>> @reg.register("round", sides=0)
    ... class Round: ...
    >>> reg.get("round") is Round, reg.meta("round")["sides"]
    (True, 0)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with metadata ``meta``."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a sampler defined in a notebook cell that is being redefined)."""
        self.get(name)
        del self._items[name], self._meta[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``; a ``KeyError`` listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (e.g. a sampler's order and NFE per step)."""
        self.get(name)
        return self._meta[name]

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())
