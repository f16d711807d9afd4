"""What the documentation shows a new user exists as shown (fast: nothing is exported or trained).

- every `edgecompress ...` command line in README.md, docs/ and calibration_data/README.md (code
  blocks, inline code, recipe comments) names a real command and only that command's options, and
  its `-f` / `--format` / `--export` values are registered formats and precisions;
- the Python blocks compile, their `from edgecompress... import` names exist, and calls to the
  public API (in blocks and inline code such as `load_model(..., input_dtype=...)`) use keywords
  the function takes;
- repository paths the docs name (`benchmarks/compress_effnet.py`, `targets/profiles/*.toml`) exist;
- docs/recipes/*.yaml validate.

The README's build step itself runs in tests/test_readme_build_example.py.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "calibration_data" / "README.md"]
RECIPES = sorted((ROOT / "docs" / "recipes").glob("*.yaml"))
GLOBAL_FLAGS = {"--debug", "--verbose", "--help", "-h"}
# code blocks that are not edgecompress's (usage lines with placeholders are handled below)
ENTRY_POINT_GROUPS = {"edgecompress.formats", "edgecompress.passes", "edgecompress.runners"}
TOP_DIRS = ("edgecompress/", "exporters/", "targets/", "benchmarks/", "docs/", "tests/", "scripts/",
            "calibration_data/", ".ci/")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _where(path: Path, text: str, pos: int) -> str:
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, pos) + 1}"


def _code_blocks(text: str, lang: str | None = None) -> list[tuple[int, str, str]]:
    """(offset, language, body) of every fenced block."""
    return [(m.start(2), m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.DOTALL)
            if lang is None or m.group(1) == lang]


def _commands() -> list[tuple[str, str]]:
    """(where, command line from `edgecompress` on) for every documented invocation."""
    found: list[tuple[str, str]] = []
    for path in [*DOCS, *RECIPES]:
        text = _text(path)
        spans: list[tuple[int, str]] = []
        if path.suffix == ".yaml":
            spans += [(m.start(), m.group(1)) for m in re.finditer(r"#\s*(edgecompress .*)", text)]
        else:
            for start, _lang, body in _code_blocks(text):
                offset = start
                for line in re.split(r"(?<!\\)\n", body):  # continuation lines joined
                    spans.append((offset, line.replace("\\\n", " ")))
                    offset += len(line) + 1
            outside = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), text, flags=re.DOTALL)
            spans += [(m.start(), m.group(1)) for m in re.finditer(r"`([^`\n]*edgecompress [a-z][^`\n]*)`", outside)]
        for pos, line in spans:
            # several commands on one line (`a; b`), a command inside `$( ... )`
            for part in re.split(r";|\$\(|\)\s", line):
                m = re.search(r"(?:^|\s|/)(edgecompress (?:[a-z].*))$", part.strip())
                if m:
                    found.append((_where(path, text, pos), m.group(1)))
    return found


def _cli_options() -> dict[str, set[str]]:
    import typer

    from edgecompress.cli import app

    out: dict[str, set[str]] = {}

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}

    walk(typer.main.get_command(app), [])
    return out


def test_documented_commands_exist_with_their_flags():
    from edgecompress.exporters.base import FORMATS

    options = _cli_options()
    commands = _commands()
    assert len(commands) >= 10, commands  # the extraction still finds the README's commands
    problems = []
    for where, line in commands:
        line = line.split(" #")[0].replace("...", " ")
        line = re.sub(r"[\[\]]", " ", line) if "OUT_DIR" in line else line  # a usage line: [--opt VALUE]
        try:
            words = shlex.split(line)
        except ValueError as e:
            problems.append(f"{where}: cannot split {line!r}: {e}")
            continue
        words = words[1:]
        name = " ".join(words[:2]) if " ".join(words[:2]) in options else words[0] if words else ""
        if name not in options:
            problems.append(f"{where}: no command `edgecompress {name}` ({line})")
            continue
        rest = words[len(name.split()):]
        for i, w in enumerate(rest):
            flag = w.split("=")[0]
            if flag.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", flag):
                if flag not in options[name] | GLOBAL_FLAGS:
                    problems.append(f"{where}: `edgecompress {name}` has no option {flag}")
                if flag in ("-f", "--format", "--export") and i + 1 < len(rest):
                    fmt, _, precision = rest[i + 1].partition(":")
                    if fmt not in FORMATS:
                        problems.append(f"{where}: {flag} {rest[i + 1]}: no format {fmt!r}")
                    elif precision and precision not in FORMATS.get(fmt).precisions:
                        problems.append(f"{where}: {flag} {rest[i + 1]}: {fmt} has no precision {precision!r}")
    assert not problems, "\n".join(problems)


def test_format_precision_pairs_in_prose_exist():
    """`tflite:dynamic-int8`, `onnx:int8-dynamic`: the two spellings a reader copies from prose."""
    from edgecompress.exporters.base import FORMATS

    names = "|".join(re.escape(n) for n in FORMATS.names())
    problems, seen = [], 0
    for path in DOCS:
        text = _text(path)
        for m in re.finditer(rf"(?<![\w/.-])({names}):([a-z][\w-]*)", text):
            seen += 1
            if m.group(2) not in FORMATS.get(m.group(1)).precisions:
                problems.append(f"{_where(path, text, m.start())}: {m.group(0)}: no such precision")
    assert seen >= 5 and not problems, "\n".join(problems)


def test_flags_named_in_prose_exist():
    """A flag written in prose (`--prune-blocks N`, "`--float-first N` on `export` and `compress`")
    is an option of some command, or a documented outsider (docker's, a benchmark script's)."""
    options = set().union(*_cli_options().values()) | GLOBAL_FLAGS
    outsiders = {"--user", "--opt_in", "--ours", "--stage", "--rounds", "--optimum-python"}
    problems = []
    for path in [*DOCS, *RECIPES]:
        text = _text(path)
        for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", text):
            if m.group(1) not in options | outsiders:
                problems.append(f"{_where(path, text, m.start())}: {m.group(1)} is no edgecompress option")
    assert not problems, "\n".join(problems)


# the public API a snippet may call, by the name it is written under
def _api() -> dict[str, object]:
    import edgecompress
    from edgecompress.data import load_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.models import load_model
    from edgecompress.pipeline import ExportJob
    from edgecompress.report import Report, write_report
    from edgecompress.targets import ValidateSettings, reference_outputs, validate

    return {"load_model": load_model, "load_data": load_data, "export": export, "ExportOptions": ExportOptions,
            "validate": validate, "ValidateSettings": ValidateSettings, "reference_outputs": reference_outputs,
            "Report.from_measurements": Report.from_measurements, "write_report": write_report,
            "ExportJob": ExportJob, "run_export": edgecompress.run_export, "run_recipe": edgecompress.run_recipe,
            "load_recipe": edgecompress.load_recipe, "save_recipe": edgecompress.save_recipe,
            **{n: getattr(edgecompress, n) for n in ("prune", "lowrank", "distill", "qat", "resolution")}}


def _check_keywords(fn: object, keywords: list[str], where: str, call: str) -> list[str]:
    params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    return [f"{where}: {call}: no keyword {k}= (takes {', '.join(params)})" for k in keywords if k not in params]


def test_python_snippets_match_the_api():
    api = _api()
    problems = []
    for path in DOCS:
        text = _text(path)
        for start, _lang, body in _code_blocks(text, "python"):
            where = _where(path, text, start)
            tree = ast.parse(body)  # a SyntaxError fails the test with the line
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgecompress"):
                    mod = importlib.import_module(node.module or "")
                    problems += [f"{where}: {node.module} has no {a.name}" for a in node.names
                                 if not hasattr(mod, a.name)]
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    if name in api:
                        problems += _check_keywords(api[name], [k.arg for k in node.keywords if k.arg],
                                                    where, name)
        # inline code: `load_model(..., input_dtype=...)`, `ExportOptions(extra={...})`
        for m in re.finditer(r"`((\w+\.)*?(\w+(?:\.from_measurements)?)\(([^`]*)\))`", text):
            name = m.group(3)
            if name in api and (m.group(2) is None or m.group(1).startswith("edgecompress.")):
                keywords = re.findall(r"(?:^|[(,]\s*)(\w+)=(?!=)", m.group(4))
                problems += _check_keywords(api[name], keywords, _where(path, text, m.start()), m.group(1))
        # dotted names: `edgecompress.recipe.anchored(r)`, `edgecompress.pipeline.run_export(...)`
        for m in re.finditer(r"`(edgecompress(?:\.\w+)+)", text):
            if m.group(1) in ENTRY_POINT_GROUPS:
                continue
            parts = m.group(1).split(".")
            obj: object = importlib.import_module("edgecompress")
            for i, part in enumerate(parts[1:], 1):
                if not hasattr(obj, part):
                    try:
                        obj = importlib.import_module(".".join(parts[: i + 1]))
                        continue
                    except ImportError:
                        problems.append(f"{_where(path, text, m.start())}: {'.'.join(parts[: i + 1])} does not exist")
                        break
                obj = getattr(obj, part)
    assert not problems, "\n".join(problems)


PATH_RE = r"(?<![\w./-])((?:" + "|".join(map(re.escape, TOP_DIRS)) + r")[\w./*-]*[\w*/])"


def test_repository_paths_in_the_docs_exist():
    problems = []
    for path in [*DOCS, *RECIPES]:
        text = _text(path)
        for m in re.finditer(PATH_RE, text):
            rel = m.group(1)
            if rel.startswith("calibration_data/built") or "/.cache/" in rel or rel.endswith("/out"):
                continue  # written by a command, not committed
            if not (list(ROOT.glob(rel)) or (path.parent / rel).exists()):
                problems.append(f"{_where(path, text, m.start())}: {rel} does not exist")
        for m in re.finditer(r"\]\(([^)#:]+)\)", text):  # markdown links
            if not (path.parent / m.group(1)).exists():
                problems.append(f"{_where(path, text, m.start())}: link to {m.group(1)} does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_doc_recipes_validate(recipe):
    import yaml

    from edgecompress.recipe import parse_recipe

    parse_recipe(yaml.safe_load(_text(recipe)), str(recipe))


@pytest.mark.parametrize(("argv", "says"), [
    # the README's export line with its --int8 moved onto the compress line just below it
    (["compress", "zoo:digits-cnn", "--prune", "0.5", "--int8"], "-f onnx:int8"),
    (["compress", "zoo:digits-cnn", "--prune", "0.5", "--format", "onnx:int8"], "--export / -f"),
    (["export", "zoo:digits-cnn", "--prune", "0.5"], "edgecompress compress MODEL --prune"),
    (["run", "docs/recipes/digits-minimal.yaml", "-f", "onnx"], "from the recipe"),
])
def test_an_option_of_the_other_command_says_which_command_has_it(argv, says):
    """click guessed by spelling: `compress --int8` -> "Possible options: --train"."""
    from conftest import run_cli

    r = run_cli(*argv)
    assert r.returncode == 2, r.stderr[-500:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Possible options" not in lines[0], r.stderr[-500:]


def test_markdown_tables_keep_their_columns():
    """A `|` inside inline code still splits a GitHub table cell: the README's ONNX format row
    (`--calib-method minmax|percentile|entropy`) rendered with two cells too many."""
    problems = []
    for path in DOCS:
        text = _text(path)
        outside = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
        width = None
        for n, line in enumerate(outside.splitlines(), 1):
            if not line.startswith("|"):
                width = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip().strip("|")))
            if width is None:
                width = cells
            elif cells != width:
                problems.append(f"{path.relative_to(ROOT)}:{n}: {cells} cells, the table's header has {width}")
    assert not problems, "\n".join(problems)


def test_readme_names_every_gate_field_of_latency_and_drift():
    """The README lists what `--fail-on` can gate; a field added to the gates' table shows there too."""
    from edgecompress.targets.gates import _BATCH_FIELDS, _GATE_FIELDS

    text = _text(ROOT / "README.md")
    start = text.index("A gate names a number of an artifact row")
    listing = text[start:text.index("A gate path that is no report field", start)]
    missing = [f"{k}.{f}" for k in ("latency_ms", "drift") for f in sorted(_GATE_FIELDS[k])
               if f"`{f}`" not in listing]
    missing += [f"latency_by_batch.N.{f}" for f in sorted(_BATCH_FIELDS - _GATE_FIELDS["latency_ms"])
                if f"`{f}`" not in listing]
    assert not missing, missing
