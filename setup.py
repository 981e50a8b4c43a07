"""Build: compile the sans-I/O core's hot modules with mypyc (``dispatcher/_build.py`` lists them).

Without a C compiler, on a mypyc error, or with ``NETHARNESS_PURE_PYTHON=1`` the install still succeeds as
pure Python, with one warning line.  Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PKG = ROOT / "dispatcher"

_spec = importlib.util.spec_from_file_location("_netharness_build", PKG / "_build.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def warn(why: str) -> None:
    print(f"WARNING: netharness: installing the pure-Python core ({why}); "
          f"`netharness bench --only core` shows the difference", file=sys.stderr)


def forget_build() -> None:
    """No hash record, no stale extension files: the import then runs pure Python without a warning."""
    for f in build.extension_files(PKG):
        f.unlink()
    (PKG / build.HASHES).unlink(missing_ok=True)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler, a compile error: the package still works without the extensions
            forget_build()
            first = str(e).splitlines()[0] if str(e) else ""
            warn(f"compiling failed: {type(e).__name__}: {first[:160]}{'...' if len(first) > 160 else ''}")
            return
        if self.extensions:
            build.write_hashes(PKG)


def ext_modules() -> list[Any]:
    for f in build.orphan_extensions(PKG):  # a module an older build compiled and this one does not
        f.unlink()
    if os.environ.get(build.PURE_ENV) == "1":
        forget_build()
        warn(f"{build.PURE_ENV}=1")
        return []
    try:
        from mypyc.build import mypycify

        cwd = os.getcwd()
        os.chdir(ROOT)  # mypyc wants paths relative to the project (module names come from them)
        try:
            return list(mypycify([f"dispatcher/{build.source_path(m)}" for m in build.COMPILED], opt_level="3",
                                 group_name=build.GROUP))
        finally:
            os.chdir(cwd)
    except BaseException as e:  # mypyc reports type errors with SystemExit
        if isinstance(e, KeyboardInterrupt):
            raise
        forget_build()
        warn(f"mypyc failed: {type(e).__name__}: {e}")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
