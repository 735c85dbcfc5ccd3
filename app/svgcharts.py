"""Light line charts drawn as inline SVG, for the home page people keep open all day.

Plotly costs the browser about 0.6 s of main-thread time for its first chart on a page and
~0.3 s for each further one (bench/dashboard.py); the home page's three time series need no
zoom, so they are drawn here as plain SVG: one polyline per series, a few gridlines and time
ticks, a legend, and a tooltip (`<title>`) per line with its latest and peak value. The channel
page keeps Plotly for exploring. Pure functions of DataFrames; every
label goes through `escaping.html`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from app.escaping import html

PALETTE = ["#1f6feb", "#8250df", "#1a7f37", "#bf3989", "#0a7ea4", "#9a6700", "#6e7781", "#fb8f44"]
WIDTH, HEIGHT = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 8, 22


def colours(names: list[str]) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(names))}


def nice_max(value: float) -> float:
    """The smallest 1, 2, 4 or 8 × 10ⁿ at or above `value`: a top whose quarters are round too."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 8, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def line_chart(
    frame: pd.DataFrame,
    *,
    y: str,
    title: str,
    unit: str,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    y_max: float | None = None,
) -> str:
    """Lines of `y` over `bucket`, one per `channel` (columns bucket, channel, y): an HTML figure."""
    data = frame.assign(t=pd.to_datetime(frame["bucket"], utc=True)).sort_values("t")
    start, end = data["t"].min(), data["t"].max()
    span = max((end - start).total_seconds(), 1.0)
    top = y_max if y_max is not None else nice_max(float(data[y].max()) if not data.empty else 0.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(t: pd.Timestamp) -> float:
        return LEFT + (t - start).total_seconds() / span * plot_w

    def py(v: float) -> float:
        return TOP + plot_h - min(max(float(v), 0.0), top) / top * plot_h

    parts = []
    for i in range(5):  # gridlines and y labels at 0, ¼, ½, ¾ and the top
        value = top * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
                     f'stroke="#eaeef2"/><text x="{LEFT - 4}" y="{py(value) + 4:.1f}" text-anchor="end">'
                     f"{html(fmt(value))}</text>")
    hours = span / 3600
    step = pd.Timedelta(minutes=30 if hours <= 3 else 60 if hours <= 6 else 180 if hours <= 12 else 360)
    tick = start.ceil(step) if not data.empty else start
    while not data.empty and tick <= end:
        parts.append(f'<text x="{px(tick):.1f}" y="{HEIGHT - 6}" text-anchor="middle">{tick:%H:%M}</text>')
        tick += step
    palette = colours([str(c) for c in data["channel"].unique()])
    legend = []
    for channel, group in data.groupby("channel", sort=True):
        name, colour = html(channel), palette[str(channel)]
        points = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in zip(group["t"], group[y], strict=True))
        last, peak = group.iloc[-1], group.loc[group[y].idxmax()]
        tip = (f"{name}: {html(fmt(last[y]))} {html(unit)} at {last['t']:%H:%M} UTC · "
               f"peak {html(fmt(peak[y]))} at {peak['t']:%H:%M}")
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
                     f"<title>{tip}</title></polyline>")
        legend.append(f'<span style="white-space:nowrap;margin-right:12px"><span style="display:inline-block;'
                      f'width:12px;height:3px;background:{colour};vertical-align:middle;margin-right:4px"></span>'
                      f"{name}</span>")
    svg = (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{html(title)}" '
           f'style="font:11px sans-serif;fill:#57606a;display:block">{"".join(parts)}</svg>')
    return (f'<figure style="margin:0 0 12px" data-chart="{html(title)}">'
            f'<figcaption style="font-weight:600;font-size:15px;margin:4px 0">{html(title)}</figcaption>'
            f'{svg}<div style="font-size:0.8rem;color:#57606a">{"".join(legend)}</div></figure>')


def throughput_chart(flow: pd.DataFrame, *, bin_minutes: int = 5) -> str:
    return line_chart(flow, y="events", title=f"Throughput (events per {bin_minutes} min)", unit="events")


def error_rate_chart(flow: pd.DataFrame, *, bin_minutes: int = 5) -> str:
    pct = flow.assign(pct=flow["error_rate"] * 100)
    return line_chart(pct, y="pct", title=f"Error rate (% of events per {bin_minutes} min)", unit="% errors",
                      fmt=lambda v: f"{v:.2f}".rstrip("0").rstrip(".") + "%")


def within_target_chart(within: pd.DataFrame, *, sla: str | None = None) -> str:
    title = f"Within target — {sla}" if sla else "Within target — all SLAs"
    return line_chart(within.dropna(subset=["within_pct"]), y="within_pct", title=title, unit="% within target",
                      fmt=lambda v: f"{v:.1f}".rstrip("0").rstrip(".") + "%", y_max=100.0)
