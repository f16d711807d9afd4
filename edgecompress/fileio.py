"""Crash-safe file writing: every artifact and report goes to a temporary path, then is renamed.

A reader (or a later build step) therefore sees either the complete old file or the complete new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecompress.errors import OutputError


def ensure_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Create `path` if needed and check that we can write in it; one-line error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot create directory ({e.strerror})") from e
    if not path.is_dir():
        raise OutputError(f"{flag} {path}: exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: directory is not writable")
    return path


@contextlib.contextmanager
def output_dir(path: Path, flag: str = "--out") -> Iterator[Path]:
    """`ensure_writable_dir`, undone on failure: the directories it created are removed again if
    they are still empty (a failed run left an empty --out folder, parents included)."""
    path = Path(path).absolute()
    created = [d for d in (path, *path.parents) if not d.exists()]
    ensure_writable_dir(path, flag)
    try:
        yield path
    except BaseException:
        if created:  # empty folders the run made inside a folder it created (a step's workdir)
            subs = sorted((Path(d) for d, _, _ in os.walk(path)), key=lambda d: -len(d.parts))
            for sub in subs[:-1]:  # deepest first; `path` itself is the last
                with contextlib.suppress(OSError):  # not empty: kept
                    sub.rmdir()
        for d in created:  # deepest first; stops at the first that holds something
            try:
                d.rmdir()
            except OSError:
                break
        raise


def safe_child(root: Path, name: str) -> Path:
    """`root/name`, refusing names that would escape `root` (`../x`, absolute paths, symlinks)."""
    root = Path(root).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise OutputError(f"output name {name!r} would escape the output directory {root}")
    return target


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then raise it as KeyboardInterrupt.

    Python delivers a signal at the first bytecode after the C call it arrived in: a Ctrl-C during
    `mkstemp` surfaced before the temp file was inside `atomic_path`'s try, and the file stayed
    behind (seen in CI when a fine-tune saving a checkpoint every epoch was interrupted).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught and old is not signal.SIG_IGN:
            if callable(old) and old is not signal.default_int_handler:
                old(signal.SIGINT, None)
            else:
                raise KeyboardInterrupt


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it; put it straight back
    os.umask(mask)
    return mask


def no_space(e: BaseException | None) -> bool:
    """The disk (or quota) is full: an output problem, whatever layer raised it."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The temporary name keeps the final suffix (some tools dispatch on it) and starts with TEMP_PREFIX
    so a crash leaves nothing that looks like an artifact. Creating and deleting the temp file are
    shielded from Ctrl-C (the interrupt is raised just after), so an interrupted run leaves none.
    """
    final = Path(final)
    suffix = final.suffix if suffix is None else suffix
    tmp: Path | None = None
    try:
        with _sigint_deferred():
            fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{final.stem}-", suffix=suffix, dir=final.parent)
            os.close(fd)
            tmp = Path(tmp_name)
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputError(f"{final}: the writer produced no data")
        if tmp.is_file():  # mkstemp makes it 0600; the artifact gets the mode a plain write would
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except OSError as e:
        if no_space(e):
            raise OutputError(f"{final}: no space left on device") from e
        raise
    finally:
        if tmp is not None:
            with _sigint_deferred(), contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _finite(obj: Any) -> Any:
    """NaN / Inf as null: json.dumps wrote bare NaN, which strict JSON parsers (and jq) reject."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=str,
                                              allow_nan=False) + "\n")


# Every temporary name written by this module and the exporters starts with it. Distinctive on
# purpose: the stale-temp cleanup of an output directory deletes what starts with it, and a user's
# own `.tmp-notes` or `.session.tmp` beside the artifacts must survive (they did not, before).
TEMP_PREFIX = ".edgecompress-tmp-"


@contextlib.contextmanager
def exclusive_dir(path: Path, flag: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on directory `path` while writing into it [issue #7].

    flock on the directory itself (no lock file to leave behind); the kernel drops it when the
    process dies, even by SIGKILL. A second run into the same directory fails at once instead of
    interleaving its artifacts and manifest with ours.
    """
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{flag} {path}: another edgecompress run is writing there") from None
        yield Path(path)
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete TEMP_PREFIX files/dirs directly in `path` left by a killed run [issue #7].

    Only call this while holding `exclusive_dir(path)`: then no live writer owns them.
    """
    import shutil

    removed = []
    for p in Path(path).glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def path_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file of a directory / multi-file artifact."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
