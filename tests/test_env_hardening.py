"""The environment a run meets: no home directory, odd cache variables, a read-only cache, an
--out that is a file, too long or not UTF-8. Each gave a traceback (or a cache in the working
directory) before; each is a working run or one `error:` line now."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgecompress.errors import OutputError
from tests.conftest import ROOT, run_cli

OTHER_UID = 12345  # no passwd entry: Path.home() raises once $HOME is unset
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _no_passwd_entry(monkeypatch):
    """What a container started with `--user 12345` sees: no $HOME, no passwd entry."""
    import pwd

    def missing(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", missing)


def _cache_env(monkeypatch, cache=None, xdg=None):
    for name, value in (("EDGECOMPRESS_CACHE", cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


# --- the cache location ------------------------------------------------------------------------
def test_cache_variable_is_enough_without_a_home(tmp_path, monkeypatch):
    from edgecompress.paths import cache_dir

    _no_passwd_entry(monkeypatch)
    _cache_env(monkeypatch, cache=tmp_path / "c")
    assert cache_dir() == tmp_path / "c"  # was RuntimeError: Could not determine home directory
    _cache_env(monkeypatch, xdg=tmp_path / "xdg")
    assert cache_dir() == tmp_path / "xdg" / "edgecompress"


def test_no_cache_location_at_all_names_the_variable(monkeypatch):
    from edgecompress.paths import cache_dir

    _no_passwd_entry(monkeypatch)
    _cache_env(monkeypatch)
    with pytest.raises(OutputError, match="set EDGECOMPRESS_CACHE") as e:
        cache_dir()
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_empty_or_relative_cache_variables_are_ignored(tmp_path, monkeypatch):
    """XDG: an empty variable means unset, a relative one is invalid. "" put the cache in the cwd."""
    from edgecompress.paths import cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = tmp_path / "home" / ".cache" / "edgecompress"
    for xdg in ("", "relative/cache"):
        _cache_env(monkeypatch, cache="", xdg=xdg)
        assert cache_dir() == home_cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing in the working directory


def test_cache_that_is_a_file_says_so(tmp_path, monkeypatch):
    from edgecompress.paths import cache_dir

    (tmp_path / "c").write_text("x")
    _cache_env(monkeypatch, cache=tmp_path / "c")
    with pytest.raises(OutputError, match=r"\$EDGECOMPRESS_CACHE\): it is a file, not a directory"):
        cache_dir()


# --- runs as another user (setpriv, root only) or in a read-only directory -----------------------
@pytest.fixture
def shared_dir(tmp_path):
    """A directory the other user can reach: pytest's tmp_path sits under 0700 folders of root."""
    if not IS_ROOT:
        yield tmp_path
        return
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    d = Path(tempfile.mkdtemp(prefix="edgecompress-envtest-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _writable_by_all(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o777)
    return d


def _read_only(d: Path) -> Path:
    """A directory this run cannot write: root's own (as another user), or chmod 555."""
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755 if IS_ROOT else 0o555)
    return d


def _run_as_other(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run python `args` as a UID without a passwd entry when we are root, else as ourselves."""
    prefix = (["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
              if IS_ROOT else [])
    env = {**env, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*prefix, sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    if IS_ROOT and "import edgecompress" in args[-1] and "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"uid {OTHER_UID} cannot import edgecompress from {ROOT}")
    return proc


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "EDGECOMPRESS_CACHE")}


CLI = "import edgecompress, sys; from edgecompress.cli import main; sys.argv[0] = 'edgecompress'; main()"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run as a UID without a passwd entry")
def test_export_without_home_runs_with_the_cache_variable(shared_dir, digits_spec):
    from edgecompress.paths import cache_dir

    cache = _writable_by_all(shared_dir / "cache")
    shutil.copy(cache_dir() / "digits-cnn-v1.pt", cache)  # a cached model: no training here
    out = _writable_by_all(shared_dir / "runs") / "out"
    env = {**_base_env(), "EDGECOMPRESS_CACHE": str(cache)}
    r = _run_as_other(["-c", CLI, "export", "zoo:digits-cnn", "--no-validate", "--out", str(out)], env,
                      shared_dir)
    assert r.returncode == 0, r.stderr
    assert (out / "digits-cnn-fp32.onnx").is_file() and (out / "report.json").is_file()

    env = _base_env()  # no cache variable and no home: one line that names the fix
    r = _run_as_other(["-c", CLI, "export", "zoo:digits-cnn", "--no-validate", "--out", str(out)], env,
                      shared_dir)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "EDGECOMPRESS_CACHE" in r.stderr.strip().splitlines()[-1]


def test_read_only_cache_trains_and_carries_on(shared_dir):
    """Caching is an optimisation: a cache we cannot write costs the training time, not the run."""
    cache = _read_only(shared_dir / "ro-cache")
    out = _writable_by_all(shared_dir / "runs") / "out"
    env = {**_base_env(), "EDGECOMPRESS_CACHE": str(cache)}
    try:
        # one fresh training (~10 s): the cache is empty and stays so
        r = _run_as_other(["-c", CLI, "export", "zoo:digits-cnn", "--no-validate", "--out", str(out)],
                          env, shared_dir)
    finally:
        cache.chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "digits-cnn-fp32.onnx").is_file()
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: cache directory")]
    assert len(notes) == 1 and str(cache) in notes[0] and "not writable" in notes[0], r.stderr
    assert not list(cache.iterdir())


def test_read_only_cache_still_gives_the_digits_data(shared_dir):
    cache = _read_only(shared_dir / "ro-cache")
    script = ("import edgecompress, numpy as np\n"
              "from edgecompress.models.digits import digits_npz\n"
              "from edgecompress.data.builtin import photo_crops_npz\n"
              "a, b = digits_npz('test'), digits_npz('train')\n"
              "print(a); print(b); print(np.load(a)['x'].shape, np.load(b)['x'].shape)\n"
              "assert np.load(photo_crops_npz())['x'].shape[1:] == (3, 224, 224)\n")
    try:
        r = _run_as_other(["-c", script], {**_base_env(), "EDGECOMPRESS_CACHE": str(cache)}, shared_dir)
    finally:
        cache.chmod(0o755)
    assert r.returncode == 0, r.stderr
    test_npz, train_npz, shapes = r.stdout.splitlines()
    assert shapes == "(450, 1, 8, 8) (1347, 1, 8, 8)"
    # same names (`data build` copies them under them), outside the cache, gone after the run
    assert Path(test_npz).name == "digits-test-v1.npz" and Path(train_npz).name == "digits-train-v1.npz"
    assert Path(test_npz).parent != cache and not Path(test_npz).exists()
    assert len([line for line in r.stderr.splitlines() if line.startswith("note:")]) == 1


# --- --out and the atomic writers -----------------------------------------------------------------
def test_out_that_is_a_file_says_file(tmp_path, digits_spec):
    (tmp_path / "afile").write_text("mine")
    r = run_cli("export", "zoo:digits-cnn", "--no-validate", "--out", str(tmp_path / "afile"))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"error: --out {tmp_path / 'afile'}: is a file, not a directory"
    assert (tmp_path / "afile").read_text() == "mine"


def test_out_below_a_file_names_the_file(tmp_path):
    from edgecompress.fileio import ensure_writable_dir

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputError, match=f"cannot create directory \\({tmp_path / 'afile'} is a file\\)"):
        ensure_writable_dir(tmp_path / "afile" / "sub")


def test_out_name_too_long_is_one_line(tmp_path, digits_spec):
    out = tmp_path / ("x" * 300)
    r = run_cli("export", "zoo:digits-cnn", "--no-validate", "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: --out {out}: cannot create directory (File name too long)")


def test_atomic_writers_turn_output_oserrors_into_one_line(tmp_path, monkeypatch):
    from edgecompress.fileio import atomic_path, write_json_atomic, write_text_atomic

    long = tmp_path / ("y" * 250 + ".md")  # fits; the temp name beside it used not to
    assert write_text_atomic(long, "ok").read_text() == "ok"
    with pytest.raises(OutputError, match=r"cannot write \(File name too long\)"):
        write_text_atomic(tmp_path / ("z" * 300 + ".md"), "x")
    with pytest.raises(OutputError, match=r"missing/r\.json: cannot write \(No such file or directory\)"):
        write_json_atomic(tmp_path / "missing" / "r.json", {})
    (tmp_path / "adir.md").mkdir()
    with pytest.raises(OutputError, match=r"adir\.md: cannot write \(Is a directory\)"):
        write_text_atomic(tmp_path / "adir.md", "x")

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(OutputError, match=r"ro\.md: cannot write \(Read-only file system\)"):
        write_text_atomic(tmp_path / "ro.md", "x")
    monkeypatch.undo()
    # an OSError about something else (an input the writer reads) is not blamed on the output
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "b.bin"):
        open(tmp_path / "no-such-input")  # noqa: SIM115
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["adir.md", long.name])


def test_non_utf8_out_name(tmp_path, digits_spec):
    import json

    out = tmp_path / os.fsdecode(b"lat\xe9")  # a Latin-1 name: not UTF-8
    try:
        out.mkdir()
        out.rmdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    # not run_cli: the CLI prints the report's path, bytes that text=True cannot decode
    # int8 in every format, validated: ONNX Runtime and LiteRT refused the path (a TypeError)
    r = subprocess.run([sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "-f", "onnx",
                        "-f", "tflite", "--int8", "--runs", "2", "--warmup", "0", "--rounds", "1",
                        "--out", str(out)], capture_output=True, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr  # was UnicodeEncodeError writing report.md
    rows = json.loads((out / "report.json").read_text(encoding="utf-8"))["artifacts"]
    assert [a["status"] for a in rows] == ["ok"] * 4, [a.get("error") for a in rows]
    for name in ("report.md", "report.html"):
        text = (out / name).read_bytes().decode("utf-8")  # valid UTF-8; the byte shown as \xe9
        assert "lat\\xe9" in text
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert os.fsdecode(b"lat\xe9") in data["command"]  # JSON keeps the name exactly


def test_non_utf8_input_names_fail_in_one_line(tmp_path, digits_spec):
    """An input file whose name is not UTF-8 failed as "not a valid ONNX model (TypeError:
    check_model_path() ...)" (export) or as a UnicodeEncodeError row (validate): the runtimes take
    UTF-8 paths only. Now one line naming the file, exit 2, and no --out."""
    from edgecompress.exporters import export

    folder = tmp_path / os.fsdecode(b"lat\xe9")
    try:
        folder.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    good = export(digits_spec, "onnx", "fp32", tmp_path / "ok")
    (folder / "m.onnx").write_bytes(Path(good.path).read_bytes())
    (tmp_path / os.fsdecode(b"m\xfe.onnx")).write_bytes(Path(good.path).read_bytes())
    for args, shown in ((["export", os.fsdecode(b"lat\xe9/m.onnx"), "-f", "onnx:int8"], "MODEL lat\\xe9/m.onnx"),
                        (["validate", os.fsdecode(b"m\xfe.onnx")], "ARTIFACT m\\xfe.onnx")):
        r = subprocess.run([sys.executable, "-m", "edgecompress.cli", *args, "--out", "o"], capture_output=True,
                           timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        err = r.stderr.decode("utf-8").strip()
        assert r.returncode == 2, err
        assert err.splitlines()[-1].startswith("error: ") and shown in err and "not valid UTF-8" in err, err
        assert not (tmp_path / "o").exists()
    # the folder part of an artifact's path is fine (the runtimes open it by name from inside)
    from edgecompress.targets.device_report import load_artifacts

    (art,), _ = load_artifacts([folder / "m.onnx"])
    assert art.format == "onnx"


def test_a_cache_that_cannot_be_created_costs_a_note_not_the_run(tmp_path):
    """An existing read-only cache cost a note; one that could not be created (a path under a file,
    a read-only mount) stopped the run with exit 2."""
    (tmp_path / "afile").write_text("x")
    code = ("from edgecompress.models import load_model; "
            "s = load_model('zoo:digits-cnn'); print(sum(p.numel() for p in s.module.parameters()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "EDGECOMPRESS_CACHE": str(tmp_path / "afile" / "cache"),
                            "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) > 40_000  # the trained model, as from a cache
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: cache directory")]
    assert len(notes) == 1 and "cannot create" in notes[0], r.stderr
    assert not (tmp_path / "afile").is_dir()
