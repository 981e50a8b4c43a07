"""Which build of the sans-I/O core runs: compiled by mypyc (``pip install -e .`` does it) or pure Python.

``setup.py`` compiles ``COMPILED`` and records a hash of each source in ``_build_hashes.json`` (generated,
gitignored).  At import ``dispatcher/__init__.py`` calls ``choose()``, which installs ``PurePythonFinder``
(the package's one import-time action) when ``NETHARNESS_PURE_PYTHON=1`` is set or when a compiled source
changed since the build (one warning naming the file and the rebuild command), so ``dispatcher.*``
submodules load from their ``.py`` files even where ``.so`` files exist.  Standard library only: ``setup.py``
loads this file by path, before anything else is installed.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: The modules mypyc compiles: the hot path of the sans-I/O core, what it calls per frame (``promise``;
#: ``stats``, whose ``Stats`` users may still subclass) and the TCP runtime (``runtime.tcp*``: a load
#: generator's per-request path; gevent is called through the Python API, greenlets switch out of compiled
#: frames as out of any C extension).  Stay interpreted: ``transport``, ``helpers``, the loopback and sim
#: runtimes, the public dataclasses (``envelope``, ``config``, ``limits``, ``qosconfig``), numpy code and cold
#: set-up code.  A name is a module path under ``dispatcher`` (``runtime.tcpconn``).
COMPILED = (
    "base", "bus", "clocksync", "connection", "core", "counters", "decoder", "promise", "qos", "receiving",
    "roles", "schematest", "sending", "sequence", "stats", "tally", "text", "timers", "wire",
    "runtime.tcpbase", "runtime.tcpclient", "runtime.tcpclientconn", "runtime.tcpconn", "runtime.tcpserver",
)
#: The mypyc group: its shared library is ``dispatcher/native__mypyc.*.so`` (inside the package, so an
#: editable install finds it where it finds the package).
GROUP = "dispatcher.native"
HASHES = "_build_hashes.json"
PURE_ENV = "NETHARNESS_PURE_PYTHON"
REBUILD = 'pip install -e ".[test]"'

PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(module: str) -> str:
    """A module's path relative to the package, without suffix (``runtime.tcpconn`` -> ``runtime/tcpconn``)."""
    return module.replace(".", "/")


def source_path(module: str) -> str:
    """A compiled module's source file, relative to the package (``runtime.tcpconn`` -> ``runtime/tcpconn.py``)."""
    return module_path(module) + ".py"


def source_hashes(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """sha256 of each compiled module's source, by module name."""
    return {m: hashlib.sha256((package_dir / source_path(m)).read_bytes()).hexdigest() for m in COMPILED}


def write_hashes(package_dir: Path) -> None:
    (package_dir / HASHES).write_text(json.dumps(source_hashes(package_dir), indent=1, sort_keys=True) + "\n")


def extension_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The compiled files present for ``COMPILED`` (and the group's shared library)."""
    names = [module_path(m) for m in COMPILED] + [GROUP.rpartition(".")[2] + "__mypyc"]
    return [package_dir / f"{n}{suffix}" for n in names for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (package_dir / f"{n}{suffix}").exists()]


def orphan_extensions(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Extension files of modules no longer in ``COMPILED`` (an older build's): Python would import one
    ahead of its ``.py``, so the build removes them."""
    keep = set(extension_files(package_dir))
    return sorted({f for suffix in importlib.machinery.EXTENSION_SUFFIXES for f in package_dir.rglob(f"*{suffix}")
                   if f not in keep})


def stale_sources(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The compiled modules whose ``.py`` differs from what was compiled (all of them if no record)."""
    try:
        built = json.loads((package_dir / HASHES).read_text())
    except (OSError, ValueError):
        return list(COMPILED)
    now = source_hashes(package_dir)
    return [m for m in COMPILED if built.get(m) != now[m]]


class PurePythonFinder:
    """A meta-path finder that loads ``dispatcher.<name>`` (and ``dispatcher.<sub>.<name>``) from its ``.py``
    file (never from an extension)."""

    def __init__(self, package: str, package_dir: Path) -> None:
        self.package = package
        self.package_dir = package_dir

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith(self.package + "."):
            return None
        source = self.package_dir / source_path(fullname[len(self.package) + 1:])
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def choose(package: str) -> str:
    """Install ``PurePythonFinder`` when the pure build must run; return why ("" when compiled may run)."""
    reason = ""
    if os.environ.get(PURE_ENV) == "1":
        reason = f"{PURE_ENV}=1"
    elif extension_files():
        stale = stale_sources()
        if stale:
            reason = "stale build"
            warnings.warn(f"netharness: dispatcher/{source_path(stale[0])} changed since the compiled build "
                          f"({len(stale)} file(s)): running pure Python; rebuild with: {REBUILD}",
                          RuntimeWarning, stacklevel=3)
    if reason and not any(isinstance(f, PurePythonFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PurePythonFinder(package, PACKAGE_DIR))
    return reason


def compiled_modules(package: str) -> list[str]:
    """The ``dispatcher`` submodules loaded from extension modules (compiled by mypyc)."""
    out = []
    for m in COMPILED:
        mod = sys.modules.get(f"{package}.{m}")
        if mod is not None and isinstance(getattr(mod, "__loader__", None), importlib.machinery.ExtensionFileLoader):
            out.append(m)
    return out
