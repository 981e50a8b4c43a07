"""Command-line pieces every ``netharness`` command shares: a parser whose errors are one line, argument
types that say what is allowed, and plain-text help from reStructuredText docstrings."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

__all__ = ["CliError", "Parser", "fail", "plain", "port", "version"]


class CliError(Exception):
    """Bad input to a command: printed as one line ``netharness CMD: error: ...``, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on standard error (and exit code 2), with the
    help text shown as plain text."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        if isinstance(kwargs.get("description"), str):
            kwargs["description"] = plain(str(kwargs["description"]))
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_LITERAL = re.compile(r"``(.+?)``", re.S)


def plain(text: str) -> str:
    """reStructuredText to plain text for help output: ``code`` -> code, ``::`` -> ``:``."""
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::(\s*\n)", r":\1", text)


def port(text: str) -> int:
    """An argparse type: a TCP port, 0..65535 (0 picks a free one)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number; allowed: 0..65535") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is out of range; allowed: 0..65535 (0 picks a free one)")
    return n


def version() -> str:
    """The installed package's version (from its metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("netharness")
    except PackageNotFoundError:
        return "unknown (not installed)"


def fail(prog: str, message: str) -> int:
    """Print the one-line error for bad input and return exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
