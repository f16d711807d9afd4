"""Where things live: the user cache and the shared data set beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache (trained zoo models, built data sets): $EDGECOMPRESS_CACHE or XDG."""
    root = os.environ.get("EDGECOMPRESS_CACHE")
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = Path(root) if root else xdg / "edgecompress"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from edgecompress.errors import OutputError

        raise OutputError(f"cache directory {path} ($EDGECOMPRESS_CACHE / $XDG_CACHE_HOME): cannot create "
                          f"({e.strerror})") from None
    return path


def shared_data_dir() -> Path | None:
    """`../shared/data` next to the checkout (or $EDGECOMPRESS_SHARED_DATA), if present."""
    env = os.environ.get("EDGECOMPRESS_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            cand = d / "shared" / "data"
            if (cand / "README.md").is_file():
                return cand
    return None


def imagenet_sample() -> Path | None:
    """The labels CSV of the shared 1000-image ImageNet sample, if present."""
    d = shared_data_dir()
    p = d / "imagenet-sample-1k" / "labels.csv" if d else None
    return p if p is not None and p.is_file() else None
