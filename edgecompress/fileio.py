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
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecompress.errors import OutputError, opt


def _is_file(path: Path) -> bool | None:
    """True for a non-directory, False for a directory, None when `path` cannot be stat'ed.

    Not Path.exists()/is_dir(): they raise on ENAMETOOLONG (a traceback, not an error message).
    """
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):  # missing, name too long, no permission, embedded NUL
        return None


def _named(path: Path, flag: str | None) -> str:
    """`path` as an error names it: after `flag` (a label like "checkpoint directory"), else as the
    output directory option the caller used (`--out PATH`, `out_dir=PATH`)."""
    return f"{flag} {path}" if flag else opt("--out", "out_dir", path, quoted=True)


def ensure_writable_dir(path: Path, flag: str | None = None) -> Path:
    """Create `path` if needed and check that we can write in it; one-line error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        # mkdir(exist_ok=True) raises "File exists" for a file too: say which (it read as if a
        # directory of that name were in the way). A file higher up gives ENOTDIR: name it as well.
        blocker = next((d for d in (path, *path.parents) if _is_file(d)), None)
        if blocker == path:
            raise OutputError(f"{_named(path, flag)}: is a file, not a directory") from e
        if blocker is not None:
            raise OutputError(f"{_named(path, flag)}: cannot create directory ({blocker} is a file)") from e
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OutputError(f"{_named(path, flag)}: cannot create directory ({why})") from e
    if _is_file(path) is not False:  # mkdir succeeded, yet no directory: lost a race with a file
        raise OutputError(f"{_named(path, flag)}: is a file, not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{_named(path, flag)}: directory is not writable")
    return path


@contextlib.contextmanager
def output_dir(path: Path, flag: str | None = None) -> Iterator[Path]:
    """`ensure_writable_dir`, undone on failure: the directories it created are removed again if
    they are still empty (a failed run left an empty --out folder, parents included)."""
    path = Path(path).absolute()
    created = [d for d in (path, *path.parents) if _is_file(d) is None]
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


# Folders a run finished writing while a Ctrl-C / SIGTERM was held (`results_landing`): the CLI's
# "interrupted" line must not say "nothing written" of them.
LANDED_WHILE_INTERRUPTED: list[Path] = []


@contextlib.contextmanager
def results_landing(out_dir: Path) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a run's results move into `out_dir` and its report, records
    and manifest are written (a second or two), then deliver them: a signal in that window left
    the new artifacts beside the previous run's report, with no manifest. Now the folder is one
    run's, whole, and the interrupt still stops the process after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    olds = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in olds.items():
            signal.signal(sig, old)
        if caught:
            LANDED_WHILE_INTERRUPTED.append(Path(out_dir))
            sig = signal.Signals(caught[0])
            old = olds[sig]
            if callable(old):
                old(sig, None)  # SIGINT: KeyboardInterrupt; the CLI's SIGTERM handler: the same
            elif old == signal.SIG_DFL:
                signal.raise_signal(sig)


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it; put it straight back
    os.umask(mask)
    return mask


def no_space(e: BaseException | None) -> bool:
    """The disk (or quota) is full: an output problem, whatever layer raised it."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _cannot_write(final: Path, e: OSError) -> OutputError:
    """One line naming the output file, for an OSError met while writing it."""
    if no_space(e):
        return OutputError(f"{final}: no space left on device")
    return OutputError(f"{final}: cannot write ({e.strerror or e})")


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
            try:
                # The stem is cut short: the temp name is longer than the final one, and a final
                # name near the 255-byte limit failed with ENAMETOOLONG here only.
                fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{final.stem[:64]}-", suffix=suffix,
                                                dir=final.parent)
            except OSError as e:  # EACCES, EROFS, ENAMETOOLONG, ENOENT...: the output's fault
                raise _cannot_write(final, e) from e
            os.close(fd)
            tmp = Path(tmp_name)
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputError(f"{final}: the writer produced no data")
        try:
            if tmp.is_file():  # mkstemp makes it 0600; the artifact gets the mode a plain write would
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)  # EISDIR, EACCES on a sticky directory, ...
        except OSError as e:
            raise _cannot_write(final, e) from e
    except OSError as e:
        # From the writer (the block): only a full disk, or an error on the file it was given, is
        # the output's fault; any other OSError (an input it reads, say) passes unchanged.
        named = e.filename if isinstance(e.filename, str | bytes | os.PathLike) else None
        if no_space(e) or (tmp is not None and named is not None and os.fsdecode(named) == str(tmp)):
            raise _cannot_write(final, e) from e
        raise
    finally:
        if tmp is not None:
            with _sigint_deferred(), contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def printable(text: str) -> str:
    """`text` with each undecodable byte of a file name shown as `\\xNN`: valid UTF-8 to write.

    Python decodes a path that is not UTF-8 (`--out $'lat\\xe9'`) with surrogate escapes, which
    UTF-8 refuses: writing report.md raised UnicodeEncodeError half-way through the report files.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to: keep it readable
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def require_utf8_name(path: str | Path, what: str, name_only: bool = False) -> None:
    """Refuse a path that is not valid UTF-8 (InputFileError), naming the byte and `what` it is
    (a noun: "model", "artifact"; see errors.named).

    The ONNX checker, ONNX Runtime, OpenVINO and LiteRT take paths as UTF-8 strings: such a file
    failed as "not a valid ONNX model (TypeError: check_model_path() ...)" or, under validate, as a
    UnicodeEncodeError of the benchmark. Folders in --out are fine (our own files are opened by name
    from inside them): `name_only` checks the last part alone, for files opened that way.
    """
    text = str(path)
    try:
        (Path(text).name if name_only else text).encode("utf-8")
    except UnicodeEncodeError:
        from edgecompress.errors import InputFileError, named

        raise InputFileError(f"{named(what, printable(text))}: the path is not valid UTF-8, which the ONNX, "
                             "OpenVINO and LiteRT Python bindings cannot take; rename it (or link it under a "
                             "UTF-8 name)") from None


def write_text_atomic(path: Path, text: str) -> Path:
    # JSON needs none of this: json.dumps writes non-ASCII as \u escapes, which keep the bytes.
    with atomic_path(path) as tmp:
        tmp.write_text(printable(text), encoding="utf-8")
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


def json_loads(text: str | bytes) -> Any:
    """json.loads for a file the user gave (a baseline report, a manifest, a model's config.json): a
    document nested deeper than Python's parser recurses (`[[[[...]]]]`) raised RecursionError, a
    traceback past every caller's `except json.JSONDecodeError`; it is that error now, so each
    caller names the file in its one line, as for any other unreadable JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise _TooDeep(NESTED_TOO_DEEPLY, text if isinstance(text, str) else "", 0) from None


class _TooDeep(json.JSONDecodeError):
    """json_loads' error for a document nested too deeply: no "line 1 column 1 (char 0)", which
    points at nothing."""

    def __str__(self) -> str:
        return self.msg


# What a config or data file nested deeper than its parser recurses is called (JSON, YAML, TOML)
NESTED_TOO_DEEPLY = "nested too deeply to read"


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=str,
                                              allow_nan=False) + "\n")


# Every temporary name written by this module and the exporters starts with it. Distinctive on
# purpose: the stale-temp cleanup of an output directory deletes what starts with it, and a user's
# own `.tmp-notes` or `.session.tmp` beside the artifacts must survive (they did not, before).
TEMP_PREFIX = ".edgecompress-tmp-"


@contextlib.contextmanager
def exclusive_dir(path: Path, flag: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on directory `path` while writing into it [issue #7].

    flock on the directory itself (no lock file to leave behind); the kernel drops it when the
    process dies, even by SIGKILL. A second run into the same directory fails at once instead of
    interleaving its artifacts and manifest with ours.
    """
    import fcntl

    # Re-entrant in the thread that holds it: a recipe run holds its --out through the passes and
    # its export takes it again (another thread, or another process, is still refused).
    key = (os.path.realpath(path), threading.get_ident())
    if key in _HELD:
        yield Path(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{_named(path, flag)}: another edgecompress run is writing there") from None
        _HELD.add(key)
        try:
            yield Path(path)
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


_HELD: set[tuple[str, int]] = set()  # (directory, thread) pairs holding an exclusive_dir lock


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


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def path_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file of a directory / multi-file artifact."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def path_or_bytes(path: Path | str) -> str | bytes:
    """What to hand a runtime binding for a model file: its path, or the file's bytes when the path
    is not UTF-8 (a folder named with Latin-1 bytes reaches Python as surrogate escapes, and ONNX
    Runtime's and LiteRT's bindings refused it with a TypeError). For self-contained files only:
    from bytes, external data beside the file is not found."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        return Path(path).read_bytes()
