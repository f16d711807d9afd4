"""Where things live: the user cache and the shared data set beside the checkout."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def _home() -> Path | None:
    """The user's home directory, or None when there is none to be found.

    Not `Path.home()`: it raises RuntimeError when $HOME is unset and the UID has no passwd entry
    (containers run with `--user 12345`), and an empty $HOME makes it `/`. Evaluated only when the
    cache variables do not say where the cache is, so setting one of them is always enough.
    """
    home = os.environ.get("HOME", "")
    if os.path.isabs(home):
        return Path(home)
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):  # no pwd module (Windows), or no passwd entry for this UID
        return None
    return Path(home) if os.path.isabs(home) else None


def _cache_root() -> tuple[Path, str]:
    """Where the cache is, and the variable that chose it (named in error messages)."""
    # Empty means unset, as the XDG spec says of its variables: XDG_CACHE_HOME="" used to put the
    # cache in the current directory.
    root = os.environ.get("EDGECOMPRESS_CACHE", "")
    if root:
        return Path(root).absolute(), "$EDGECOMPRESS_CACHE"
    # The XDG spec: a relative path is invalid and must be ignored (it would follow the cwd).
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "edgecompress", "$XDG_CACHE_HOME"
    home = _home()
    if home is None:
        from edgecompress.errors import OutputError

        raise OutputError("no cache directory: $HOME is unset and this user has no home directory; "
                          "set EDGECOMPRESS_CACHE (or XDG_CACHE_HOME) to a writable directory")
    return home / ".cache" / "edgecompress", "$HOME/.cache; set EDGECOMPRESS_CACHE to move it"


def cache_dir() -> Path:
    """Per-user cache (trained zoo models, built data sets): $EDGECOMPRESS_CACHE or XDG."""
    path, source = _cache_root()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from edgecompress.errors import OutputError

        # os.path, not Path.is_file(): that raises again on ENAMETOOLONG
        why = "it is a file, not a directory" if os.path.isfile(path) else f"cannot create ({e.strerror})"
        raise OutputError(f"cache directory {path} ({source}): {why}") from None
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


# The cache is an optimisation: when it cannot be written (a read-only or foreign-owned
# $EDGECOMPRESS_CACHE, a full disk) the run goes on with what it built, after one note. It used to
# crash with a PermissionError traceback after training for ten seconds.
_noted_uncached = False
_scratch: Path | None = None


def in_cache(path: Path) -> bool:
    """`path` exists (False too for a cache directory we may not look into)."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def note_uncached(path: Path, what: str, e: Exception, why: str | None = None) -> None:
    """One `note:` per process that `what` could not be cached at `path` (several entries would
    say the same thing)."""
    global _noted_uncached
    if _noted_uncached:
        return
    _noted_uncached = True
    if why is None:
        cause = e if isinstance(e, OSError) else e.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(e)
    print(f"note: cache directory {path.parent} is not writable ({why}): {what} was not cached and is "
          f"rebuilt on every run; set EDGECOMPRESS_CACHE to a writable directory", file=sys.stderr)


def _scratch_dir() -> Path:
    """A private temporary directory, removed at exit: where files go that the cache refused."""
    global _scratch
    if _scratch is None:
        import atexit
        import shutil
        import tempfile

        _scratch = Path(tempfile.mkdtemp(prefix="edgecompress-uncached-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch


def cache_path(name: str, what: str) -> Path:
    """Where the cache keeps `name`; a private temporary directory, after the note, when the cache
    directory cannot even be created (a read-only mount: that stopped the run, where an existing
    read-only one only cost a note)."""
    from edgecompress.errors import OutputError

    try:
        return cache_dir() / name
    except OutputError as e:
        root, _ = _cache_root()
        note_uncached(root / name, what, e, str(e).rpartition(": ")[2])  # "cannot create (...)"
        return _scratch_dir() / name


def cached_file(name: str, write: Callable[[Path], None], what: str) -> Path:
    """The cache's file `name`, written by `write(temporary path)` (then renamed) when missing. If
    the cache cannot be written: a note, and the file under the same name in a private temporary
    directory (`edgecompress data build` copies files by name)."""
    from edgecompress.errors import OutputError
    from edgecompress.fileio import atomic_path

    path = cache_path(name, what)
    if in_cache(path):
        return path
    try:
        with atomic_path(path) as tmp:
            write(tmp)
        return path
    except (OSError, OutputError) as e:
        note_uncached(path, what, e)
    path = _scratch_dir() / name
    if not in_cache(path):
        with atomic_path(path) as tmp:
            write(tmp)
    return path
