"""The ``netharness`` command: ``bench`` (and ``serve``, ``gate``, ``report`` as they land)."""

from __future__ import annotations

import sys

COMMANDS = ("serve", "gate", "report", "bench", "fuzz", "soak")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: netharness {{{','.join(COMMANDS)}}} [options]\n\n"
              "  serve   run the game server on TCP (netharness serve --help)\n"
              "  gate    check a results.json against thresholds (netharness gate --help)\n"
              "  report  latency report (HTML + PNG) of a results.json (netharness report --help)\n"
              "  bench   benchmarks, side by side in one run (netharness bench --help)\n"
              "  fuzz    mutation fuzzing of the server over loopback (netharness fuzz --help)\n"
              "  soak    honest players while each attacker runs in turn (netharness soak --help)")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "serve":
        from .serve import main as serve

        return serve(rest)
    if cmd == "gate":
        from .gate import main as gate

        return gate(rest)
    if cmd == "report":
        from reports.render import main as report

        return report(rest)
    if cmd == "bench":
        from .bench import main as bench

        return bench(rest)
    if cmd == "fuzz":
        from .fuzz import main as fuzz

        return fuzz(rest)
    if cmd == "soak":
        from .soak import main as soak

        return soak(rest)
    print(f"netharness: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
