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


def merge_snapshots(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two ``Stats.snapshot()``s as one (players of a run, workers of a run): counters add, ``max_*`` and
    ``longest_*`` take the larger, histograms merge, ratios are recomputed."""
    out: dict[str, Any] = _merge(a, b)
    return out


def _merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if "hdr" in a and "hdr" in b:  # a histogram (with its summary)
            return merged([Histogram.decode(a["hdr"]), Histogram.decode(b["hdr"])]).to_dict()
        out = {k: (_merge(a[k], b[k], k) if k in a and k in b else (a[k] if k in a else b[k])) for k in {*a, *b}}
        if "saturated_ticks" in out and "ticks" in out:
            out["saturation"] = round(out["saturated_ticks"] / out["ticks"], 6) if out["ticks"] else 0.0
        return dict(sorted(out.items()))
    if isinstance(a, bool) or isinstance(b, bool) or key in ("version",):
        return a
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b) if key.startswith(("max_", "longest_")) else a + b
    return a
