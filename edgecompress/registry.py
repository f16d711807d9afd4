"""A tiny named registry: formats, passes, targets and runners each keep one.

Entries register themselves when their module is imported; `discover` imports every module of a
package so that adding a format, pass or device is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from edgecompress.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def get(self, name: str, flag: str | None = None) -> T:
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            where = f"{flag} " if flag else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"{where}unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(sorted(self._items.items()))
