"""A tiny named registry: formats, passes and runners each keep one (with discovery); model
loaders, zoo entries, presets and QAT backends keep one each too, filled by their own module.

Entries register themselves when their module is imported. A registry with a `package` imports
every module of that package on first use, so adding a format, pass or runner to the tree is one
new file; one with an entry-point `group` also imports the modules that installed distributions
name there (`[project.entry-points."edgecompress.formats"] myfmt = "my_pkg.my_format"`), so a
plugin outside the tree is one file plus that line in its own pyproject. A module that fails to
import is skipped with a note naming it (one broken plugin took every command down, `--help`
included) and named again in the unknown-name errors of that registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from edgecompress.errors import ConfigError, did_you_mean, first_line, opt

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None, group: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self.group = group
        self._items: dict[str, T] = {}
        self._discovered = package is None and group is None
        self.failed: dict[str, str] = {}  # module -> "ErrorType: message", for modules that did not import

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first: a module being imported may look the registry up again
        targets: list[str] = []  # "module" (imported) or "module:function" (imported, then called)
        if self.package:
            pkg = importlib.import_module(self.package)
            targets += [f"{self.package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
                        if not m.name.startswith("_")]
        if self.group:
            from importlib.metadata import entry_points

            targets += [ep.value.replace(" ", "") for ep in entry_points(group=self.group)]
        for target in dict.fromkeys(targets):
            module, _, attr = target.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
                if attr:  # `my_pkg.plugin:register`: a function that registers (it was never called)
                    obj()
            except Exception as e:  # a plugin's bug or missing dependency: skipped, and said
                self.failed[target] = f"{type(e).__name__}: {first_line(e, None, empty='')}".rstrip(": ")
                print(f"note: {self.kind} module {target} failed to load ({self.failed[target]}); skipped",
                      file=sys.stderr)

    def get(self, name: str, flag: str | None = None, keyword: str | None = None) -> T:
        """The entry `name`; an unknown one is a ConfigError naming the option it came from: with a
        `keyword`, `flag` is its CLI flag (`--format 'x': unknown format`, `fmt='x': ...` from
        Python), else a label said as it is (`MODEL unknown zoo model 'x'`; "" for none)."""
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            known = f"(known: {', '.join(sorted(self._items)) or 'none'}{self.failed_note()})"
            known += did_you_mean(name, self._items)  # `-f onxx`, `zoo:efficientnet-lite`
            if flag and keyword:
                raise ConfigError(f"{opt(flag, keyword, repr(name))}: unknown {self.kind} {known}") from None
            where = f"{flag} " if flag else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r} {known}") from None

    def failed_note(self) -> str:
        """"; failed to load: module (error), ..." for an unknown-name message, or ""."""
        return ("; failed to load: " + ", ".join(f"{m} ({e})" for m, e in self.failed.items())) if self.failed else ""

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(sorted(self._items.items()))
