"""The ``netharness`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("netharness: no commands yet (serve, gate, report and bench are coming)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
