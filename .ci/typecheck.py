"""Run mypy on the edgecompress package as it installs: `python .ci/typecheck.py [mypy options]`.

exporters/ and targets/ install as edgecompress.exporters / edgecompress.targets
([tool.setuptools.package-dir] in pyproject.toml). mypy maps module names to files by directory only,
and the editable install maps those two through an import hook that mypy does not run, so
`mypy -p edgecompress` cannot find them and `mypy exporters` would call them `exporters.*`. This
passes mypy the three trees and renames each source module by the same package-dir table, so imports
resolve as they do at run time and errors point at the real files. Settings: [tool.mypy].

USAGE files are checked with them, under their own module names: code that calls the public API
as a user would (tests/typing_usage.py), so an annotation narrower than a documented call fails.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from pathlib import Path

from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.util import count_stats

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "edgecompress"
USAGE = {"tests/typing_usage.py": "typing_usage"}  # file -> module name (tests/ is no package mypy sees)


def main(argv: list[str]) -> int:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    # Deepest directory first, so targets/runners wins over targets.
    mapping = sorted((((ROOT / d).resolve(), pkg) for pkg, d in package_dir.items()),
                     key=lambda item: len(item[0].parts), reverse=True)
    roots = [PACKAGE, *sorted({d.split("/")[0] for d in package_dir.values()})]

    os.chdir(ROOT)  # [tool.mypy] cache_dir, and error paths, are relative to the project
    t0 = time.time()
    fscache = FileSystemCache()
    sources, options = process_options(
        ["--config-file", str(ROOT / "pyproject.toml"), *argv, *(str(ROOT / r) for r in roots),
         *(str(ROOT / f) for f in USAGE)], fscache=fscache
    )
    usage = {(ROOT / f).resolve(): name for f, name in USAGE.items()}
    for source in sources:
        path = Path(source.path or "").resolve()
        if path in usage:
            source.module = usage[path]
            continue
        for directory, pkg in mapping:
            if path.is_relative_to(directory):
                rest = path.relative_to(directory).with_suffix("").parts
                source.module = ".".join((pkg, *(p for p in rest if p != "__init__")))
                break
        if not (source.module == PACKAGE or source.module.startswith(PACKAGE + ".")):
            print(f"typecheck: {source.path} maps to {source.module}, outside {PACKAGE}", file=sys.stderr)
            return 2

    _, messages, blockers = run_build(sources, options, fscache, t0, sys.stdout, sys.stderr)
    n_errors, _, n_files = count_stats(messages)
    if n_errors or blockers:
        print(f"Found {n_errors} error(s) in {n_files} file(s) (checked {len(sources)} source files)")
        return 2 if blockers else 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
