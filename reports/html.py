"""The report page: one self-contained HTML file (inline CSS, PNGs embedded as data: URIs, no scripts and
no external references), readable offline and attachable to a CI run."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .aggregate import COUNTERS, Model
from .plots import BASELINE_PLOTS, COLORS, PLOTS

__all__ = ["render_html"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
tr.fail td{background:#fde2e2;font-weight:600}tr.regressed td{background:#fff1d6}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.pass{background:#2e7d32}.failb{background:#c62828}.none{background:#757575}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#666;font-size:13px}
.tier{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.scroll{max-width:100%;overflow-x:auto}#headline{font-size:16px;margin:8px 0 4px}
table.wide{font-size:12px}table.wide th{white-space:normal;vertical-align:bottom}
table.wide th,table.wide td{padding:2px 4px}table.wide th:last-child{text-align:left}
table.wide td:last-child{text-align:left;white-space:normal;min-width:160px}
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str = "",
           row_class: Any = None, wide: bool = False) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(f"<td>{escape(str(c))}</td>" for c in r)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    cls = ' class="wide"' if wide else ""
    # Every table scrolls inside the page's width instead of overflowing it.
    return (f'<div class="scroll"><table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            "</tbody></table></div>")


def render_html(m: Model, pngs: dict[str, bytes]) -> str:
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(m.title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{escape(m.title)}</h1>"]
    legend = " ".join(f'<span class="tier" style="background:{c}"></span>{t}' for t, c in COLORS.items())
    parts.append(f'<p id="headline"><b>{escape(m.headline)}</b></p>')
    parts.append(f'<p class="note">{legend}</p>')
    if m.empty:
        parts.append('<p id="empty" class="note"><b>This run recorded no samples</b>: no request, intent or event '
                     "completed. The tables below are empty; the plots say so.</p>")

    # Verdicts first: the answer to "did it keep its promises?"
    parts.append('<section id="verdicts"><h2>Threshold verdicts</h2>')
    if m.verdicts is None:
        parts.append('<p class="note"><span class="badge none">not gated</span> No thresholds were evaluated '
                     "(run with --thresholds FILE, or netharness gate).</p>"
                     + _table(("verdict", "metric", "expression", "measured"), [], table_id="verdict-table"))
    else:
        failed = sum(1 for v in m.verdicts if v[0] == "FAIL")
        badge = '<span class="badge failb">FAILED</span>' if failed else '<span class="badge pass">PASSED</span>'
        parts.append(f"<p>{badge} {len(m.verdicts) - failed} passed, {failed} failed</p>")
        parts.append(_table(("verdict", "metric", "expression", "measured"), m.verdicts, table_id="verdict-table",
                            row_class=lambda r: "fail" if r[0] == "FAIL" else ""))
    parts.append("</section>")

    parts.append('<section id="latency"><h2>Latency per envelope name</h2>')
    parts.append(_table(("kind", "tier", "name", "sent", "count", "failures", "lost", "clock skew", "behind", "p50",
                         "p90", "p99", "p99.9", "max"), m.entries, table_id="latency-table",
                        row_class=lambda r: "fail" if r[6] else ""))
    parts.append('<ul id="summary" class="note">' + "".join(f"<li>{escape(line)}</li>" for line in m.summary)
                 + "</ul>")
    parts.append('<p class="note">lost: sent but never acknowledged (reliable intents) or answered (requests) by '
                 "the end of the run, counted as failures; clock skew: one-way samples that came out negative "
                 "(counted, not in the latency figures); behind: sends that started later than the schedule's "
                 "tolerance.</p>")
    if m.phases_table:
        parts.append("<p>Per phase of the timeline:</p>")
        parts.append(_table(("phase", "kind", "tier", "count", "p50", "p99", "max"), m.phases_table,
                            table_id="phase-table"))
    parts.append("</section>")

    if m.baseline is not None:
        named = f" <code>{escape(m.baseline_name)}</code>" if m.baseline_name else ""
        parts.append(f'<section id="baseline"><h2>Against the baseline{named}</h2><p>Baseline: '
                     f'<span id="baseline-name">{escape(m.baseline_name or "(unnamed)")}</span>. '
                     f"{m.regressions} regression(s): p50 or p99 more than 10% (and 100 us) worse, highlighted.</p>")
        parts.append(_table(("kind", "tier", "name", "p50", "baseline", "change", "p99", "baseline", "change"),
                            [r[:-1] for r in m.baseline], table_id="baseline-table",
                            row_class=_regressed_class(m.baseline)))
        for stem, (title, _) in BASELINE_PLOTS.items():
            if stem in pngs:
                data = base64.b64encode(pngs[stem]).decode()
                parts.append(f'<h3>{escape(title)}</h3><img alt="{escape(title)}" src="data:image/png;base64,{data}">')
        parts.append("</section>")

    parts.append('<section id="plots"><h2>Plots</h2>')
    for stem, (title, _) in PLOTS.items():
        if stem in pngs:
            data = base64.b64encode(pngs[stem]).decode()
            parts.append(f'<h3>{escape(title)}</h3><img alt="{escape(title)}" src="data:image/png;base64,{data}">')
    parts.append("</section>")

    parts.append('<section id="dropped"><h2>Dropped and refused</h2><p class="note">Envelopes dropped and requests '
                 "refused by either dispatcher, every reason, from one table: summed by tier and by name.</p>")
    parts.append(_table(("tier", "dropped"), [*m.dropped_tiers, ("total", sum(n for _, n in m.dropped_tiers))],
                        table_id="dropped-tiers"))
    parts.append(_table(("name", "dropped"), [*m.dropped_names, ("total", sum(n for _, n in m.dropped_names))],
                        table_id="dropped-names"))
    parts.append("</section>")

    parts.append('<section id="counters"><h2>Dispatcher counters</h2>')
    for side, rows in m.counters.items():
        parts.append(f"<h3>{escape(side)} side</h3>")
        parts.append(_table(("name", *(c.replace("_", " ") for c in COUNTERS), "drops by reason"), rows,
                            table_id=f"counters-{side}", wide=True))
        peer = m.peer.get(side) or []
        if peer:
            parts.append(_table(("connection counter", "value"), peer))
    if not m.counters:
        parts.append('<p class="note">No dispatcher stats in this results file.</p>')
    parts.append("</section>")

    parts.append('<section id="meta"><h2>Run</h2>')
    parts.append(_table(("", ""), m.meta, table_id="meta-table"))
    if m.params:
        parts.append("<h3>Scenario parameters</h3>" + _table(("parameter", "value"), m.params, table_id="params-table"))
    if m.server_config:
        parts.append("<h3>The server's game config</h3>"
                     + _table(("key", "value"), m.server_config, table_id="server-config-table"))
    parts.append("</section></body></html>")
    return "\n".join(parts)


def _regressed_class(rows: list[tuple[Any, ...]]) -> Any:
    flags = {tuple(r[:-1]): r[-1] for r in rows}
    return lambda r: "regressed" if flags.get(tuple(r)) else ""
