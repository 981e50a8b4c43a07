"""The ``netharness`` command: ``serve``, ``gate``, ``report``, ``lint``, ``replay``, ``bench``."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable

from harness.args import fail, plain, version

COMMANDS = {
    "serve": "run the game server on TCP",
    "gate": "check a results.json against thresholds",
    "report": "latency report (HTML + PNG) of a results.json",
    "lint": "governance checks of the channel registry, schemas and sources",
    "replay": "inspect, export or import a replay capture",
    "bench": "benchmarks, side by side in one run",
    "fuzz": "mutation fuzzing of the server over loopback",
    "soak": "honest players while each attacker runs in turn",
}


def _usage() -> str:
    lines = [f"usage: netharness {{{','.join(COMMANDS)}}} [options]", "       netharness --version", ""]
    lines += [f"  {cmd:<7} {what} (netharness {cmd} --help)" for cmd, what in COMMANDS.items()]
    return "\n".join(lines)


def _command(cmd: str) -> Callable[[list[str]], int] | None:
    if cmd == "serve":
        from harness.game.serve import main as serve

        return serve
    if cmd == "gate":
        from harness.gate.gatecmd import main as gate

        return gate
    if cmd == "report":
        from reports.render import main as report

        return report
    if cmd == "lint":
        from harness.tools.lint import main as lint

        return lint
    if cmd == "replay":
        from harness.tools.replaycmd import main as replay

        return replay
    if cmd == "bench":
        from harness.bench.main import main as bench

        return bench
    if cmd == "fuzz":
        from harness.attack.fuzz import main as fuzz

        return fuzz
    if cmd == "soak":
        from harness.attack.soak import main as soak

        return soak
    return None


def serve_on_the_c_allocator() -> None:
    """``netharness serve`` from the command line runs on the C library's allocator (``PYTHONMALLOC=malloc``):
    its freed pages go back to the OS (``malloc_trim``) one by one, where CPython's own allocator returns a
    1 MiB arena only once every object in it is gone, so a few long-lived objects allocated during a
    connection flood would pin the flood's memory (README, "Security model and limits").  The process
    re-executes itself once, same PID, before it reads anything; a ``PYTHONMALLOC`` already set wins."""
    if "PYTHONMALLOC" in os.environ or not sys.platform.startswith("linux"):
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    try:  # the same interpreter flags and entry point (a console script or ``-m harness``)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:
        del os.environ["PYTHONMALLOC"]  # could not re-execute: serve on CPython's allocator


def _plain_help(run: Callable[[list[str]], int], rest: list[str]) -> int:
    """A command's --help, as plain text whatever its parser's description says."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = run(rest)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 0
    print(plain(buf.getvalue()), end="")
    return rc


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return fail("netharness", f"no command given; commands: {', '.join(COMMANDS)} (see netharness --help)")
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"netharness {version()}")
        return 0
    cmd, rest = argv[0], argv[1:]
    run = _command(cmd)
    if run is None:
        return fail("netharness", f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    if "-h" in rest or "--help" in rest:
        return _plain_help(run, rest)
    if cmd == "serve" and from_command_line:
        serve_on_the_c_allocator()
    if cmd == "fuzz" and "--soak" in rest:  # `fuzz --soak` is the soak (here: soak imports fuzz's helpers)
        return _command("soak")([a for a in rest if a != "--soak"])  # type: ignore[misc]
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
