"""Reading ``Stats``: readable microseconds, text tables, and merging snapshots of several peers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .histogram import Histogram, merged

__all__ = ["format_us", "merge_snapshots", "text_table"]


def format_us(v: float) -> str:
    """Microseconds, readable to 4 significant digits: 850us, 12.34ms, 1.5s."""
    if v < 1000:
        return f"{v:.0f}us"
    if v < 1_000_000:
        return f"{v / 1000:.4g}ms"
    return f"{v / 1e6:.4g}s"


def text_table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        lines.append("  ".join(padded))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def merge_snapshots(first: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """``Stats.snapshot()``s as one (players of a run, workers of a run): counters add, ``max_*`` and
    ``longest_*`` take the larger, histograms merge (each decoded once and the total encoded once, however
    many), ratios are recomputed."""
    out: dict[str, Any] = _merge([first, *more]) if more else first
    return out


def _merge(items: list[Any], key: str = "") -> Any:
    a = items[0]
    if all(isinstance(x, dict) for x in items):
        if all("hdr" in x for x in items):  # a histogram (with its summary)
            return merged(Histogram.decode(x["hdr"]) for x in items).to_dict()
        keys = {k for x in items for k in x}
        out = {}
        for k in keys:
            values = [x[k] for x in items if k in x]
            out[k] = values[0] if len(values) == 1 else _merge(values, k)
        if "saturated_ticks" in out and "ticks" in out:
            out["saturation"] = round(out["saturated_ticks"] / out["ticks"], 6) if out["ticks"] else 0.0
        return dict(sorted(out.items()))
    if any(isinstance(x, bool) for x in items) or key in ("version",):
        return a
    if all(isinstance(x, int | float) for x in items):
        return max(items) if key.startswith(("max_", "longest_")) else sum(items)
    return a
