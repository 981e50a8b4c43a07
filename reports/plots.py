"""Drawing: the report's PNGs from a ``Model`` (matplotlib, Agg backend; one colour per tier throughout)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .aggregate import TIERS, Model

__all__ = ["BASELINE_PLOTS", "COLORS", "PLOTS", "render_all", "time_label"]

COLORS = {"CRITICAL": "#d62728", "HIGH": "#ff7f0e", "NORMAL": "#1f77b4", "BACKGROUND": "#7f7f7f"}
SIZE = (9.0, 4.2)


def time_label(value: float, _pos: object = None) -> str:
    """The one unit formatter of every latency axis: microseconds in, "500us", "1.5ms", "2s" out."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}s"
    if value >= 1e3:
        return f"{value / 1e3:.3g}ms"
    return f"{value:.3g}us"


def _latency_axis(axis: Axis) -> None:
    """A log latency axis labelled only by ``time_label``: 1-2-5 ticks when it spans under two decades
    (so it always has labels), decades otherwise; the minor ticks unlabelled (no "2x10^3")."""
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 99.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,), numticks=12))
    axis.set_major_formatter(FuncFormatter(time_label))
    axis.set_minor_formatter(NullFormatter())


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _marks(ax: Axes, m: Model) -> None:
    for name, t in m.phase_marks:
        ax.axvline(t, color="#333", linestyle=":", linewidth=1)
        ax.annotate(name, (t, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points",
                    fontsize=8, color="#333")


def _plot(title: str, has_data: bool, what: str, draw: Callable[[Axes], None]) -> bytes:
    """One plot: ``draw`` fills the axes when there is data; otherwise the axes say there is none."""
    fig, ax = plt.subplots(figsize=SIZE)
    if has_data:
        draw(ax)
    else:
        _empty(ax, what)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _log_log(ax: Axes, *, x_is_latency: bool) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    _latency_axis(ax.xaxis if x_is_latency else ax.yaxis)


def latency_histogram(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            if tier in m.tier_hist:
                values, counts = m.tier_hist[tier]
                ax.bar(values, counts, width=[v * (10 ** 0.05 - 1) for v in values], align="edge", alpha=0.55,
                       color=COLORS[tier], edgecolor=COLORS[tier], label=tier)
        _log_log(ax, x_is_latency=True)
        ax.set_xlabel("latency")
        ax.set_ylabel("samples (20 bins per decade)")
        ax.legend()

    return _plot("Latency histogram per tier", bool(m.tier_hist), "latency samples", draw)


def percentile_spectrum(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            if tier in m.spectrum:
                x, y = m.spectrum[tier]
                ax.plot(x, y, color=COLORS[tier], label=tier, linewidth=1.5)
        _log_log(ax, x_is_latency=False)
        ax.set_xticks([1, 2, 10, 100, 1000, 10000, 100000], ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_xlim(1, 100000)
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency")
        ax.legend()

    return _plot("Percentile spectrum per tier (HdrHistogram style)", bool(m.spectrum), "latency samples", draw)


def latency_over_time(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            s = m.over_time.get(tier)
            if s is not None:
                ax.plot(s.t, s.p99, color=COLORS[tier], label=f"{tier} p99", linewidth=1.5)
                ax.plot(s.t, s.p50, color=COLORS[tier], label=f"{tier} p50", linewidth=1, linestyle="--")
        ax.set_yscale("log")
        _latency_axis(ax.yaxis)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("latency")
        ax.legend(fontsize=7, ncol=2)
        _marks(ax, m)

    return _plot("Latency over time (p50 dashed, p99 solid), phase boundaries dotted", bool(m.over_time),
                 "latency samples", draw)


def throughput_over_time(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            s = m.over_time.get(tier)
            if s is not None:  # the run's last second is partial: left out, so the line does not dip
                pts = [(t, c) for t, c in zip(s.t, s.count, strict=True) if m.partial_t is None or t < m.partial_t]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[tier], label=tier, linewidth=1.5)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("samples per second")
        ax.set_ylim(bottom=0)
        ax.legend()
        _marks(ax, m)

    return _plot("Throughput over time per tier (the last, partial second left out)", bool(m.over_time), "samples",
                 draw)


def queues_over_time(m: Model) -> bytes:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(SIZE[0], SIZE[1]))
    if not m.queue:
        _empty(ax1, "server queue samples")
        _empty(ax2, "server sojourn samples")
    for tier in TIERS:
        if tier in m.queue:
            t, queued, soj = m.queue[tier]
            ax1.plot(t, queued, color=COLORS[tier], label=tier, linewidth=1.5)
            # A second in which no frame of the tier left has no sojourn: a gap, not a point at 1 us.
            ax2.plot(t, [math.nan if v is None else max(1.0, v) for v in soj], color=COLORS[tier], label=tier,
                     linewidth=1.5, marker=".", markersize=3)
    if m.queue:
        ax1.set_xlabel("seconds (server)")
        ax1.set_ylabel("frames queued")
        ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
        top = max((max(q[1], default=0) for q in m.queue.values()), default=0)
        ax1.set_ylim(0, max(1, top) * 1.05)  # never -0.04..0.04 when every queue stayed empty
        ax2.set_xlabel("seconds (server)")
        ax2.set_yscale("log")
        if any(v is not None for q in m.queue.values() for v in q[2]):
            _latency_axis(ax2.yaxis)
        else:
            _empty(ax2, "frames sent")
        ax2.set_ylabel("sojourn p99")
        ax1.legend(fontsize=8)
    ax1.set_title("Server queue depth per tier")
    ax2.set_title("Server sojourn (enqueue -> wire) p99")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def saturation(m: Model) -> bytes:
    fig, ax = plt.subplots(figsize=(SIZE[0], 3.2))
    tiers = list(TIERS)
    ratios = [100 * m.saturation.get(t, (0.0, 0, 0))[0] for t in tiers]
    bars = ax.bar(tiers, ratios, color=[COLORS[t] for t in tiers])
    for bar, t in zip(bars, tiers, strict=True):
        _, longest, dropped = m.saturation.get(t, (0.0, 0, 0))
        ax.annotate(f"longest run {longest} ticks\n{dropped:,} dropped or refused",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, 125)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel("% of ticks saturated")
    ax.set_title("Saturation per tier (ticks that ended with the tier's frames waiting; both sides)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


PLOTS: dict[str, tuple[str, Callable[[Model], bytes]]] = {
    "latency_histogram": ("Latency histogram per tier", latency_histogram),
    "percentile_spectrum": ("Percentile spectrum per tier", percentile_spectrum),
    "latency_over_time": ("Latency over time", latency_over_time),
    "throughput_over_time": ("Throughput over time", throughput_over_time),
    "queues_over_time": ("Queue depth and sojourn per tier over time", queues_over_time),
    "saturation": ("Saturation per tier", saturation),
}


def baseline_spectrum(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            for spectrum, style, who in ((m.spectrum, "-", "this run"), (m.baseline_spectrum, "--", "baseline")):
                if tier in spectrum:
                    x, y = spectrum[tier]
                    ax.plot(x, y, color=COLORS[tier], linestyle=style, label=f"{tier} {who}", linewidth=1.5)
        _log_log(ax, x_is_latency=False)
        ax.set_xticks([1, 2, 10, 100, 1000, 10000, 100000], ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_xlim(1, 100000)
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency")
        ax.legend(fontsize=7, ncol=2)

    return _plot("Percentile spectrum: this run (solid) vs the baseline (dashed)",
                 bool(m.spectrum or m.baseline_spectrum), "latency samples", draw)


def baseline_over_time(m: Model) -> bytes:
    def draw(ax: Axes) -> None:
        for tier in TIERS:
            for series, style, who in ((m.over_time, "-", "this run"), (m.baseline_over_time, "--", "baseline")):
                s = series.get(tier)
                if s is not None:
                    ax.plot(s.t, s.p99, color=COLORS[tier], linestyle=style, label=f"{tier} {who}", linewidth=1.3)
        ax.set_yscale("log")
        _latency_axis(ax.yaxis)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("latency p99")
        ax.legend(fontsize=7, ncol=2)

    return _plot("p99 over time: this run (solid) vs the baseline (dashed)",
                 bool(m.over_time or m.baseline_over_time), "latency samples", draw)


BASELINE_PLOTS: dict[str, tuple[str, Callable[[Model], bytes]]] = {
    "baseline_spectrum": ("Percentile spectrum against the baseline", baseline_spectrum),
    "baseline_over_time": ("p99 over time against the baseline", baseline_over_time),
}


def render_all(m: Model) -> dict[str, bytes]:
    """Every plot as PNG bytes, by file stem (the baseline overlays only when there is a baseline)."""
    out = {stem: fn(m) for stem, (_, fn) in PLOTS.items()}
    if m.baseline is not None:
        out |= {stem: fn(m) for stem, (_, fn) in BASELINE_PLOTS.items()}
    return out
