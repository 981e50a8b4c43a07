"""``netharness bench``: figures measured side by side in one run, reported as ratios with targets.

These machines are shared and noisy: each row runs its contenders interleaved (A B A B ...) many times, on
process CPU time, and compares the best run of each (as ``timeit`` does); the ``core`` and ``loadgen`` rows
take the median ratio of a-b-b-a pairs of runs, and the ``instrumentation`` row runs its two sides step by
step (64 envelopes a step, in a random order), since the host's speed drifts over seconds.  So a burst of load elsewhere
hits both sides alike and cannot make a figure look better than it is.  Rows print as they finish; the
summary table and ``bench.json`` come last.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from harness.bench.procrows import rows_capacity, rows_loadgen, rows_memory, rows_qos
from harness.bench.rows import Row, _fmt, row_core, row_instrumentation, rows_recording

__all__ = ["ROWS", "main", "run", "summary_table"]


ROWS: dict[str, Callable[[bool], Row | list[Row]]] = {
    "core": row_core,
    "instrumentation": row_instrumentation,
    "loadgen": rows_loadgen,
    "qos": rows_qos,
    "capacity": rows_capacity,
    "recording": rows_recording,
    "memory": rows_memory,
}


def run(names: list[str] | None = None, *, quick: bool = False, out: str | Path | None = "bench.json",
        echo: Callable[[str], None] = print) -> list[Row]:
    unknown = sorted(set(names or []) - set(ROWS))
    if unknown:
        raise ValueError(f"unknown bench row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    rows = []
    echo(f"netharness bench ({'quick' if quick else 'full'}) on {platform.node()}: {platform.processor() or ''} "
         f"python {platform.python_version()}")
    for name in names or list(ROWS):
        t0 = time.perf_counter()
        got = ROWS[name](quick)
        for row in got if isinstance(got, list) else [got]:
            row.seconds = time.perf_counter() - t0
            rows.append(row)
            echo(row.line())
    echo("")
    echo(summary_table(rows))
    if out is not None:
        doc = {"quick": quick, "python": sys.version.split()[0], "machine": platform.machine(),
               "rows": [asdict(r) for r in rows]}
        Path(out).write_text(json.dumps(doc, indent=2))
    return rows


def summary_table(rows: list[Row]) -> str:
    lines = [f"| row | figures | {'ratio':<8} | target | met |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        figs = "; ".join(f"{k} {_fmt(v)}" for k, v in r.figures.items())
        lines.append(f"| {r.name} | {figs} | {r.ratio_label} {r.ratio:.3f} | {r.target} | "
                     f"{'yes' if r.met else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from harness.args import Parser

    ap = Parser(prog="netharness bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all)")
    ap.add_argument("--only", default="", help=f"comma-separated rows: {', '.join(ROWS)}")
    ap.add_argument("-o", "--output", default="bench.json", help="where to write the figures (JSON)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or None
    try:
        run(names, quick=args.quick, out=args.output)
    except ValueError as e:
        ap.error(str(e))
    return 0
