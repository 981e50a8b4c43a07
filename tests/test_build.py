"""The compiled (mypyc) build of the core and its pure-Python fallback: the suite runs whichever build is
installed (compiled where ``pip install -e .`` had a compiler); here the core's own tests also run pure
(``NETHARNESS_PURE_PYTHON=1``), and a changed source makes an old build step aside."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dispatcher
from dispatcher import _build

ROOT = Path(__file__).resolve().parent.parent
PURE = os.environ.get(_build.PURE_ENV) == "1"
BUILT = bool(_build.extension_files())

#: The dispatcher's unit tests, run again on the pure-Python core (about 30 s on a quiet machine).
CORE_TESTS = [
    "tests/test_core_hotpath.py", "tests/test_qos.py", "tests/test_loopback.py", "tests/test_connection.py",
    "tests/test_wire.py", "tests/test_timers.py", "tests/test_promise_and_sequence.py",
]

_CHECK = """
import json, sys, pytest
rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-n", "0", *sys.argv[1:]])
import dispatcher
import dispatcher.runtime.tcp  # the compiled TCP runtime too (the core's tests do not load it)
from dispatcher import _build
files = {m: sys.modules["dispatcher." + m].__file__ for m in _build.COMPILED if "dispatcher." + m in sys.modules}
print(json.dumps({"rc": int(rc), "compiled": dispatcher.COMPILED, "files": files}))
"""


def _run(code: str, *args: str, cwd: Path = ROOT, pure: bool = False, timeout: float = 300,
         pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != _build.PURE_ENV}
    if pure:
        env[_build.PURE_ENV] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-W", "default", "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_core_tests_pass_on_the_pure_python_core() -> None:
    out = _run(_CHECK, *CORE_TESTS, pure=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, out.stdout[-4000:]
    assert result["compiled"] is False
    assert len(result["files"]) == len(_build.COMPILED)
    assert all(f.endswith(".py") for f in result["files"].values()), result["files"]


def test_the_compiled_build_runs_where_it_was_built() -> None:
    if PURE:
        pytest.skip(f"{_build.PURE_ENV}=1: this run is the pure-Python one")
    if not BUILT:
        if os.environ.get("NETHARNESS_REQUIRE_COMPILED") == "1":
            pytest.fail("no compiled build (pip install -e . found no compiler, or mypyc failed: see pip -v)")
        pytest.skip("pure-Python build (no C compiler at install time): nothing compiled to check")
    assert dispatcher.COMPILED
    mods = [importlib.import_module(f"dispatcher.{m}") for m in _build.COMPILED]  # every one, loaded or not yet
    assert dispatcher.compiled_modules() == list(_build.COMPILED)
    for mod in mods:
        assert isinstance(mod.__loader__, importlib.machinery.ExtensionFileLoader), mod
        assert mod.__file__ is not None and mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_pure_python_on_request_even_where_extensions_exist() -> None:
    out = _run("import dispatcher, dispatcher.qos as q; print(dispatcher.COMPILED, q.__file__)", pure=True)
    assert out.returncode == 0, out.stderr
    compiled, path = out.stdout.split()
    assert compiled == "False" and path.endswith("dispatcher/qos.py")
    assert "Warning" not in out.stderr  # asked for: nothing to warn about


def _copy_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "dispatcher"
    shutil.copytree(ROOT / "dispatcher", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if not BUILT:  # a stand-in for an extension: the guard must step aside before anything loads it
        (pkg / f"qos{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not an extension")
        _build.write_hashes(pkg)
    return pkg


@pytest.mark.parametrize(("edit", "warned"), [("", False), ("qos.py", True), ("receiving.py", True),
                                             ("runtime/tcpclientconn.py", True)])
def test_a_source_changed_after_the_build_runs_pure_with_one_warning(tmp_path: Path, edit: str,
                                                                     warned: bool) -> None:
    if PURE:
        pytest.skip(f"{_build.PURE_ENV}=1: the guard has nothing to guard")
    if not edit and not BUILT:
        pytest.skip("pure-Python build (no C compiler at install time): no compiled build to run unedited")
    pkg = _copy_package(tmp_path)
    if edit:
        with (pkg / edit).open("a") as f:
            f.write("\n# edited after the build\n")
    out = _run("import dispatcher, dispatcher.qos as q; print(dispatcher.COMPILED, q.__file__)",
               cwd=tmp_path, pythonpath=tmp_path)
    assert out.returncode == 0, out.stderr
    compiled, path = out.stdout.split()
    assert Path(path).parent == pkg
    warnings = [line for line in out.stderr.splitlines() if "RuntimeWarning" in line]
    if warned:
        assert len(warnings) == 1, out.stderr
        assert f"dispatcher/{edit} changed since the compiled build" in warnings[0]
        assert _build.REBUILD in warnings[0]
        assert compiled == "False" and path.endswith("qos.py")
    else:
        assert warnings == [], out.stderr
        assert compiled == "True" and not path.endswith("qos.py")


def test_no_hash_record_counts_as_stale(tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    (pkg / _build.HASHES).unlink()
    assert _build.stale_sources(pkg) == list(_build.COMPILED)


def test_an_extension_of_a_module_no_longer_compiled_is_an_orphan(tmp_path: Path) -> None:
    pkg = _copy_package(tmp_path)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    orphans = [pkg / f"helpers{suffix}", pkg / "runtime" / f"loopback{suffix}"]  # never in COMPILED
    for f in orphans:
        f.write_bytes(b"an older build's extension")
    compiled = pkg / f"{_build.COMPILED[0]}{suffix}"
    compiled.write_bytes(b"this build's")
    assert _build.orphan_extensions(pkg) == sorted(orphans)
