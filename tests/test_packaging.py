"""The wheel users install: one `edgecompress` namespace holding exporters/ and targets/ (mapped by
package-dir), the target profiles and py.typed, importable without the checkout on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_namespace_with_its_data(tmp_path):
    import shutil

    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src = tmp_path / "src"
    for part in ("edgecompress", "exporters", "targets"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # setuptools' warnings (a deprecated pyproject form, a package it would ignore) show at every install
    assert "BuildBackendWarning" not in r.stderr, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edgecompress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for d in ("edgecompress", "exporters", "targets")
               for p in (ROOT / d).rglob("*.py")}
    # every module of the tree, under its installed name
    want = {s if s.startswith("edgecompress/") else f"edgecompress/{s}" for s in sources}
    assert want <= names, sorted(want - names)[:5]
    assert "edgecompress/py.typed" in names
    profiles = {p.name for p in (ROOT / "targets" / "profiles").glob("*.toml")}
    assert {f"edgecompress/targets/profiles/{p}" for p in profiles} <= names
    # installed alone (no checkout on sys.path): the registries find their modules and data
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                        str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import edgecompress, edgecompress.exporters as e, edgecompress.targets.profile as p; "
            "print(edgecompress.__file__, e.__file__, p.__file__); print(','.join(e.FORMATS.names())); "
            "print(len(p.list_targets()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    *where, formats, n_targets = r.stdout.split()
    assert all(w.startswith(str(tmp_path / "site")) for w in where), where  # not the checkout's
    assert formats == "onnx,openvino,tflite" and int(n_targets) == len(profiles)
