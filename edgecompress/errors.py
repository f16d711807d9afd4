"""Errors users see. Each carries a one-line message naming the culprit (file, option, layer, op).

The CLI prints `error: <message>` and exits with the class's `exit_code`; nothing else is shown
unless `--debug` is given.

One set of internals serves the CLI and the Python API, so a message names an option the way the
caller spelled it: `opt("--input-shape", "input_shape", "'1,x'")` is `--input-shape '1,x'` while
the CLI runs a command (`on_surface("cli")`, set by cli.py) and `input_shape='1,x'` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

Surface = Literal["python", "cli"]
# Python unless the CLI says otherwise: a notebook never sees a flag it did not type
_SURFACE: ContextVar[Surface] = ContextVar("edgecompress_surface", default="python")


def surface() -> Surface:
    """The surface messages are worded for: "cli" while a CLI command runs, else "python"."""
    return _SURFACE.get()


@contextlib.contextmanager
def on_surface(which: Surface) -> Iterator[None]:
    """Word messages for `which` inside the block (the CLI around a command; the recipe runner
    around the calls whose flag words it turns into its own keys)."""
    token = _SURFACE.set(which)
    try:
        yield
    finally:
        _SURFACE.reset(token)


def say(cli: str, python: str) -> str:
    """`cli` under the CLI, `python` otherwise: for advice whose wording differs beyond an option
    name (`drop --no-validate` / `set do_validate=True`)."""
    return cli if _SURFACE.get() == "cli" else python


def opt(flag: str, keyword: str, value: object = None, quoted: bool = False) -> str:
    """An option as the caller spelled it: `--flag VALUE` under the CLI, `keyword=VALUE` from
    Python (`--flag` / `keyword=` without a value). `value` is shown as given on both surfaces;
    `quoted`: a string argument (a path, a name), in quotes from Python (`fmt='onnx'`), bare on the
    command line (`--format onnx`)."""
    if _SURFACE.get() == "cli":
        return flag if value is None else f"{flag} {value}"
    if value is None:
        return f"{keyword}="
    return f"{keyword}={str(value)!r}" if quoted else f"{keyword}={value}"


def named(noun: str, value: object) -> str:
    """A positional argument as the caller gave it: its usage word under the CLI (`MODEL x.pt`,
    `ARTIFACT m.onnx`), the noun and the value in quotes from Python (`model 'x.pt'`)."""
    return say(f"{noun.upper()} {value}", f"{noun.lower()} {str(value)!r}")


class EdgeCompressError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it one line: build logs and CI annotations show the first line only.
        super().__init__(" ".join(str(message).split()))


class InputFileError(EdgeCompressError):
    """A file the user named is missing, unreadable or corrupt."""


class ModelLoadError(EdgeCompressError):
    """The model could not be built or loaded (bad factory, weights, checkpoint)."""


class InputShapeError(EdgeCompressError):
    """The input shape or dtype does not fit the model."""


class DataError(EdgeCompressError):
    """Calibration / evaluation data is empty, unreadable or inconsistent."""


class ConfigError(EdgeCompressError):
    """A flag, recipe or config value is invalid (unknown format, precision, pass, target...)."""


class ExportError(EdgeCompressError):
    """An exporter could not lower the model (unsupported op, dynamic shape...)."""

    exit_code = 3


class RuntimeMissingError(EdgeCompressError):
    """A runtime needed to run an artifact is not installed."""

    exit_code = 3


class ValidationError(EdgeCompressError):
    """Running an artifact on a target failed, or a gate (--fail-on) was not met."""

    exit_code = 4


class DeviceError(ValidationError):
    """The target device cannot be reached or used (connection, authentication, host key, no phone
    attached, no temp dir). Exit 3, as a missing runtime: CI reads 4 as "the model failed", and an
    offline Pi read as a regression. validate() stops at it rather than failing every artifact."""

    exit_code = 3


class OutputError(EdgeCompressError):
    """The output location cannot be written (permissions, full disk, path escapes DIR)."""


def first_line(e: BaseException, limit: int | None = 200, empty: str | None = None) -> str:
    """The first line of `e`'s message, cut to `limit` characters (None: whole), for a one-line
    error that quotes its cause; for a message-less exception, `empty` (default: its type name)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__ if empty is None else empty
    return text.splitlines()[0][:limit]
