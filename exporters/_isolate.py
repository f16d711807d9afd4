"""[issue #7] Run one export in a fresh child process (`ExportOptions(isolate=True)`).

Why: after the six causes cleared in `_memory.py`, each export still leaves 1-2 MB in third-party
C++ state with no Python root (the ONNX dynamo exporter's ShapeEnv, OpenVINO / MLIR converter
state; benchmarks/RESULTS-load.md), ~17 MB per run of ten EfficientNet-Lite0 artifacts. A child
process takes all of it with it when it exits, so a long-lived caller's RSS stays flat; the price
is a fresh interpreter (imports) per artifact.

"spawn", not fork: the parent may have live OpenMP / TBB (OpenVINO) / ORT thread pools, which a
forked child inherits in a broken state. The child therefore imports edgecompress afresh and gets
only pickled data (`picklable_spec`, the calibration Dataset, the options); the artifact, or the
exception with its class and message, comes back through a pipe. As with any spawn-based
multiprocessing, a calling *script* needs an `if __name__ == "__main__":` guard.

A model that cannot be sent (its class is not importable by module path: defined inside a function
or in an interactive session's __main__; also the QAT pass's int8 graphs, whose wrapper class and
PT2E GraphModule do not pickle) is exported in this process, with a RuntimeWarning: isolation
only saves memory, so refusing the export would trade a few MB for a failed job.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ExportError, Surface, first_line, formats_given_as, formats_keyword, on_surface, surface
from edgecompress.quiet import setup_child_process

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from edgecompress.data import Dataset
    from edgecompress.exporters.base import Artifact, ExportOptions
    from edgecompress.models import ModelSpec

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ChildTraceback(Exception):
    """The child's formatted traceback, chained as `__cause__` of the re-raised error (--debug)."""


def picklable_spec(spec: ModelSpec) -> ModelSpec:
    """A copy of `spec` holding only what the exporters read (name, module, inputs, source, task,
    preprocess, onnx_path, output_names, extra): the zoo's default_calib / default_eval callables
    go (exporters never call them), a callable preprocess becomes None (they only compare it with
    "tokenizer"). The module is shared, not copied."""
    keep = spec.preprocess if spec.preprocess is None or isinstance(spec.preprocess, str) else None
    # the model before compression (a distill teacher) is no exporter's business: not pickled
    extra = {k: v for k, v in spec.extra.items() if k != "original"}
    return spec.replace(default_calib=None, default_eval=None, preprocess=keep, extra=extra)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e, None, empty='')}"


def dump_job(spec: ModelSpec, calib: Dataset | None, options: ExportOptions) -> bytes | str:
    """Pickle what the child needs; the reason (a str) if it cannot be pickled."""
    try:
        return pickle.dumps((picklable_spec(spec), calib, options), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # PicklingError, AttributeError ("Can't pickle local object"), TypeError
        return _first_line(e)


def _vm_hwm_mb() -> float | None:
    """This process's peak RSS (VmHWM) in MB, Linux only."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _die_with_parent() -> None:
    """Have the kernel SIGKILL us if the parent dies (a killed caller must not leave a 2 GB export
    running); Linux only, best effort."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _bars_without_semaphores() -> None:
    """tqdm's default lock is a multiprocessing RLock: a named semaphore that a child stopped by the
    parent (its Ctrl-C / SIGTERM) never unlinks, and Python's resource tracker then printed a
    "leaked semaphore objects" warning after the CLI's last line. One process needs a thread lock."""
    import threading

    from tqdm import std as tqdm_std

    tqdm_std.tqdm.set_lock(threading.RLock())


def _child(conn: Connection, jobs: Connection, fmt: str, precision: str, out: str,
           threads: int | None, tmpdir: str, words: Surface, formats_word: str = "fmt") -> None:
    """Child entry point: receive the pickled job, export as `api.export` does in-process, send the
    result back. `words`: the parent's surface, so the child's errors name options as it would;
    `formats_word`: the parent's Python parameter for formats (fmt, or an ExportJob's formats)."""
    # spawn starts the child with the default context (Python words, export()'s fmt)
    with on_surface(words), formats_given_as(formats_word):
        _child_export(conn, jobs, fmt, precision, out, threads, tmpdir)


def _child_export(conn: Connection, jobs: Connection, fmt: str, precision: str, out: str,
                  threads: int | None, tmpdir: str) -> None:
    # The parent owns our life: it terminates us on its own Ctrl-C and removes our temp files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    tempfile.tempdir = tmpdir  # TemporaryDirectory()s of the exporters: the parent removes the lot
    setup_child_process()  # spawned by the CLI: its stdout/quiet rules (spawn inherits only env)
    _bars_without_semaphores()
    try:
        try:
            payload = jobs.recv_bytes()
            jobs.close()
            spec, calib, options = pickle.loads(payload)
        except Exception as e:  # e.g. a class the parent had in __main__ and we cannot import
            conn.send(("unpicklable", _first_line(e)))
            return
        del payload
        if threads:
            import torch

            torch.set_num_threads(threads)
        from edgecompress.exporters.api import export_in_process
        from edgecompress.exporters.base import FORMATS

        art = export_in_process(FORMATS.get(fmt), spec, precision, Path(out), calib, options)
        art.details["export_peak_rss_mb"] = _vm_hwm_mb()
        conn.send(("ok", art))
    except BaseException as e:
        tb = traceback.format_exc()
        try:  # the parent must be able to rebuild it: same class and message, else an ExportError
            pickle.loads(pickle.dumps(e))
            conn.send(("error", e, tb))
        except Exception:
            conn.send(("error", ExportError(f"{fmt} {precision}: {_first_line(e)}"), tb))
    finally:
        conn.close()


def _temp_names(d: Path) -> set[str]:
    """Names of temp files in `d` in the forms fileio.remove_stale_temps knows."""
    from edgecompress.fileio import TEMP_PREFIX

    return {p.name for p in d.glob(TEMP_PREFIX + "*")}


def _remove_new_temps(d: Path, before: set[str]) -> None:
    """Delete temp files that appeared in `d` since `before`: a killed child could not."""
    for n in _temp_names(d) - before:
        p = d / n
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


_TMP_PREFIX = "edgecompress-export-"  # + the parent's pid + "-": whose private TMPDIR it is


def _remove_orphaned_tempdirs() -> list[Path]:
    """Delete the private TMPDIRs of isolated exports whose parent process is gone.

    A parent killed with SIGKILL cannot remove its child's directory (and the child dies with it,
    PR_SET_PDEATHSIG), so the next isolated export in any process does. A directory whose pid is
    alive, or not ours to signal, is left alone."""
    removed = []
    for d in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = d.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except OSError:  # alive, another user's
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _stop(proc: BaseProcess) -> None:
    if proc.pid is None:  # never started
        return
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
    proc.join()


def _death(fmt: str, precision: str, proc: BaseProcess) -> ExportError:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return ExportError(f"{fmt} {precision}: the export child process (pid {proc.pid}) was killed "
                           f"by {sig}{hint}; nothing was written")
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    hint = (f" (isolate=True spawns a child that re-runs {Path(script).name} before the export; put the "
            "script's work under `if __name__ == \"__main__\":`)" if script and code == 1 else "")
    return ExportError(f"{fmt} {precision}: the export child process (pid {proc.pid}) exited with "
                       f"code {code} without a result; nothing was written{hint}")


def export_in_child(fmt: str, spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                    options: ExportOptions) -> Artifact:
    """`Format.export` of `fmt` in a spawned child; returns its Artifact or raises its error.

    A spec that cannot be sent is exported here instead, with a RuntimeWarning (module doc)."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    payload = dump_job(spec, calib, options)
    if isinstance(payload, str):
        return _in_process(fmt, spec, precision, out, calib, options, payload)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    # The job goes over a pipe of our own after the start, not in the Process args: spawn writes
    # those to the child while holding the read end open itself, so a child dying before it read
    # them (a script without `if __name__ == "__main__":`, re-run by the child) hung the parent
    # forever once the model filled the pipe. Here a dead reader is a BrokenPipeError.
    job_recv, job_send = ctx.Pipe(duplex=False)
    _remove_orphaned_tempdirs()
    tmpdir = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
    before = _temp_names(out.parent)
    proc = ctx.Process(target=_child, name=f"edgecompress-export-{fmt}-{precision}",
                       args=(send, job_recv, fmt, precision, str(out), threads, tmpdir, surface(),
                             formats_keyword()))
    msg: Any = None
    try:
        proc.start()
        send.close()  # ours: now EOF on `recv` means the child is gone
        job_recv.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            job_send.send_bytes(payload)  # a child already gone is found below
        job_send.close()
        del payload
        wait([recv, proc.sentinel])
        with contextlib.suppress(EOFError, OSError):
            if recv.poll():
                msg = recv.recv()
        proc.join()
    finally:  # also on KeyboardInterrupt: stop the child, then remove what it left
        send.close()
        recv.close()
        job_recv.close()
        job_send.close()
        _stop(proc)
        if msg is None or msg[0] != "ok":
            _remove_new_temps(out.parent, before)
        shutil.rmtree(tmpdir, ignore_errors=True)
    if msg is None:
        raise _death(fmt, precision, proc)
    if msg[0] == "error":
        raise msg[1] from ChildTraceback(msg[2].rstrip())
    if msg[0] == "unpicklable":
        return _in_process(fmt, spec, precision, out, calib, options, msg[1])
    return msg[1]


def _in_process(fmt: str, spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                options: ExportOptions, reason: str) -> Artifact:
    from edgecompress.exporters.api import export_in_process
    from edgecompress.exporters.base import FORMATS

    warnings.warn(f"isolate=True: model {spec.name} cannot be sent to a child process ({reason}); "
                  f"exporting {fmt} {precision} in this process (isolation needs a model class "
                  "importable by module path)", RuntimeWarning, stacklevel=4)
    return export_in_process(FORMATS.get(fmt), spec, precision, out, calib, options)
