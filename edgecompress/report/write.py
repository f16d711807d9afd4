"""Write report.json / report.md / report.html / report.png, each atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from edgecompress.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from edgecompress.report.model import Report
from edgecompress.report.plot import tradeoff_png
from edgecompress.report.render import to_html, to_markdown


def write_report(report: Report, out_dir: str | os.PathLike[str], stem: str = "report") -> dict[str, Path]:
    """Write `stem`.json / .md / .html (and .png when some artifact has accuracy or drift) into
    `out_dir`, created if needed; returns their paths by kind ("json", "md", "html", "png")."""
    from edgecompress.errors import ConfigError
    from edgecompress.fileio import ensure_writable_dir

    if not isinstance(report, Report):  # a dict failed with "'dict' object has no attribute 'data'"
        hint = " (Report.from_dict(...) builds one)" if isinstance(report, dict) else ""
        raise ConfigError(f"write_report: report must be a Report (Report.from_measurements(...)), got "
                          f"{type(report).__name__}{hint}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ConfigError(f"write_report: out_dir must be a path (str or Path), got {type(out_dir).__name__}")
    # a plain file name: "../x" wrote beside out_dir (its links then pointed nowhere), "" hidden files
    plain = isinstance(stem, str) and re.fullmatch(r"[^/\\\x00]+", stem) and stem == stem.strip()
    if not plain or stem.startswith("."):
        raise ConfigError(f"write_report: stem {stem!r}: a plain file name without a folder, e.g. 'report'")
    out_dir = ensure_writable_dir(Path(out_dir))
    n = (report.data or {}).get("eval_n")
    try:
        png = tradeoff_png(report.artifacts, f"{report.model.get('name')} on {report.target}",
                           n if isinstance(n, int) and n > 0 else None)
    except Exception as e:  # the plot illustrates the tables; it must not cost the report
        import sys

        print(f"note: the report's plot was not drawn ({type(e).__name__}: {e}); the tables are complete",
              file=sys.stderr)
        png = None
    paths = {}
    if png:
        paths["png"] = write_bytes_atomic(out_dir / f"{stem}.png", png)
    else:  # an earlier run's plot would sit beside a report that says it has none
        (out_dir / f"{stem}.png").unlink(missing_ok=True)
    paths["md"] = write_text_atomic(out_dir / f"{stem}.md", to_markdown(report, f"{stem}.png" if png else None))
    paths["html"] = write_text_atomic(out_dir / f"{stem}.html", to_html(report, png))
    # JSON last: CI gates read it, so it only appears once everything it points to exists.
    paths["json"] = write_json_atomic(out_dir / f"{stem}.json", _portable(report.to_dict(), out_dir))
    return paths


def _portable(data: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Artifact paths under the report's folder are written relative to it, so the folder can be
    moved, archived by CI or copied off a build machine and still point at its files; paths
    elsewhere (`validate` of files in another folder) are written absolute."""
    for row in data.get("artifacts", []):
        if row.get("path"):
            row["path"] = report_path(row["path"], out_dir)
    return data


def report_path(path: str | Path, out_dir: str | Path) -> str:
    """`path` as report.json writes it: relative to the report's folder `out_dir` when inside it,
    else absolute (a path relative to the working directory resolved from nowhere once the
    report was read from its folder)."""
    full, root = Path(path).resolve(), Path(out_dir).resolve()
    return Path(os.path.relpath(full, root)).as_posix() if full.is_relative_to(root) else str(full)
