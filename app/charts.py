"""Plotly figures for the dashboard: pure functions of DataFrames (no database, no Streamlit).

Plotly renders a subset of HTML in titles, labels, legends and hover text (links included), so
every value that came from data goes through `escaping.html` here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from app.escaping import html

STATUS_COLOUR = {"ok": "#1f6feb", "retry": "#bf8700", "error": "#cf222e", "dead_letter": "#82071e"}
PALETTE = ["#1f6feb", "#8250df", "#1a7f37", "#bf3989", "#0a7ea4", "#9a6700", "#6e7781", "#fb8f44"]


def _layout(fig: go.Figure, *, title: str, y_title: str, height: int = 320, **extra: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0},
        hovermode="x unified",
        plot_bgcolor="white",
        yaxis={"title": y_title, "gridcolor": "#eaeef2", "rangemode": "tozero"},
        xaxis={"gridcolor": "#eaeef2", "tickformat": "%H:%M"},
        **extra,
    )
    return fig


def _colours(channels: list[str]) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(channels))}


def throughput_figure(df: pd.DataFrame, *, bin_minutes: int = 5) -> go.Figure:
    """Events per bin, one line per channel (columns bucket, channel, events)."""
    fig = go.Figure()
    colours = _colours(list(df["channel"].unique())) if not df.empty else {}
    for channel, group in df.groupby("channel", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["bucket"],
                y=group["events"].astype(int).tolist(),
                name=html(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:,} events<extra>" + html(channel) + "</extra>",
            )
        )
    return _layout(fig, title=f"Throughput (events per {bin_minutes} min)", y_title="events")


def error_rate_figure(df: pd.DataFrame, *, bin_minutes: int = 5) -> go.Figure:
    """Error rate (errors + dead letters over events) per channel and bin, in percent."""
    fig = go.Figure()
    colours = _colours(list(df["channel"].unique())) if not df.empty else {}
    for channel, group in df.groupby("channel", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["bucket"],
                y=(group["error_rate"] * 100).round(2).tolist(),
                customdata=group[["errors", "events"]].astype(int).values.tolist(),
                name=html(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:.2f}% (%{customdata[0]} of %{customdata[1]})<extra>" + html(channel) + "</extra>",
            )
        )
    return _layout(fig, title=f"Error rate (% of events per {bin_minutes} min)", y_title="% errors")


def within_target_figure(df: pd.DataFrame, *, sla: str | None = None) -> go.Figure:
    """Share within target (%) per channel over time (columns bucket, channel, within_pct)."""
    fig = go.Figure()
    colours = _colours(list(df["channel"].unique())) if not df.empty else {}
    for channel, group in df.groupby("channel", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["bucket"],
                y=group["within_pct"].tolist(),
                customdata=group[["met", "count"]].astype(int).values.tolist(),
                name=html(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra>" + html(channel) + "</extra>",
            )
        )
    title = f"Within target — {html(sla)}" if sla else "Within target — all SLAs"
    fig = _layout(fig, title=title, y_title="% within target")
    fig.update_yaxes(range=[0, 101], rangemode="normal")
    return fig


def freshness_figure(df: pd.DataFrame, limits: dict[str, float] | None = None) -> go.Figure:
    """Heat map channel × location of the minutes since the last successful sync; with `limits`
    (max age in ms per channel) stale cells are marked `!` so colour is not the only cue."""
    pivot = df.pivot_table(index="channel", columns="location", values="age_s", aggfunc="max") / 60

    def cell(channel: str, v: float) -> str:
        if pd.isna(v):
            return ""
        text = f"{v:.0f} min" if v < 120 else f"{v / 60:.1f} h"
        if limits is not None and v * 60_000 > limits.get(channel, 3_600_000):
            text = "! " + text
        return text

    text = pd.DataFrame({col: [cell(ch, pivot.at[ch, col]) for ch in pivot.index] for col in pivot.columns},
                        index=pivot.index)
    fig = go.Figure(
        go.Heatmap(
            z=pivot.round(1).values.tolist(),
            x=[html(c) for c in pivot.columns],
            y=[html(i) for i in pivot.index],
            text=text.values.tolist(),
            texttemplate="%{text}",
            colorscale=[[0, "#dafbe1"], [0.35, "#fff8c5"], [0.7, "#ffb77c"], [1, "#cf222e"]],
            zmin=0,
            zmax=max(60.0, float(pivot.max().max()) if not pivot.empty else 60.0),
            colorbar={"title": {"text": "min"}, "thickness": 12},
            hovertemplate="%{y} · %{x}<br>last sync %{text} ago<extra></extra>",
            xgap=2,
            ygap=2,
        )
    )
    return _layout(
        fig,
        title="Inventory freshness (age of last sync per location)",
        y_title="",
        height=max(220, 70 + 44 * len(pivot.index)),
    ).update_layout(hovermode="closest")


def timeline_figure(events: pd.DataFrame) -> go.Figure:
    """One transaction's events by system on a time axis; errors in red (columns time, system, milestone, status)."""
    fig = go.Figure()
    if events.empty:
        return _layout(fig, title="Timeline", y_title="")
    ordered = events.sort_values("time").assign(
        system=lambda d: d["system"].map(html), milestone=lambda d: d["milestone"].map(html),
        error=lambda d: d["error"].map(html))
    systems = list(dict.fromkeys(ordered["system"]))
    fig.add_trace(
        go.Scatter(
            x=ordered["time"],
            y=ordered["system"],
            mode="lines",
            line={"color": "#d0d7de", "width": 1.5},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    for status, group in ordered.groupby("status", sort=False):
        fig.add_trace(
            go.Scatter(
                x=group["time"],
                y=group["system"],
                # Only successful steps carry a label: failed attempts sit next to their retry.
                mode="markers+text" if status == "ok" else "markers",
                name=html(status),
                text=group["milestone"],
                textposition="top center",
                textfont={"size": 11},
                marker={"size": 13, "color": STATUS_COLOUR.get(str(status), "#6e7781"), "line": {"width": 1, "color": "white"},
                        "symbol": "x" if status in ("error", "dead_letter") else "circle"},
                customdata=group[["error"]].values.tolist(),
                hovertemplate="%{x|%H:%M:%S}<br>%{text}<br>" + html(status) + " %{customdata[0]}<extra>%{y}</extra>",
            )
        )
    fig = _layout(fig, title="Timeline by system", y_title="", height=max(280, 130 + 60 * len(systems)))
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(systems)), rangemode="normal")
    start, end = pd.Timestamp(ordered["time"].min()), pd.Timestamp(ordered["time"].max())
    pad = max((end - start) * 0.12, pd.Timedelta(seconds=30))
    fig.update_xaxes(range=[start - pad, end + pad])
    fig.update_layout(hovermode="closest")
    return fig


def latency_figure(df: pd.DataFrame, *, sla: str, target_ms: float | None = None, bin_minutes: int = 5) -> go.Figure:
    """p50 and p95 latency (minutes) per bin for one SLA, the target as a dashed horizontal line."""
    fig = go.Figure()
    for column, name, colour, dash in (("p50_ms", "p50", "#1f6feb", "solid"), ("p95_ms", "p95", "#8250df", "solid")):
        fig.add_trace(
            go.Scatter(
                x=df["bucket"],
                y=(df[column].astype(float) / 60_000).round(2).tolist(),
                name=name,
                mode="lines+markers",
                marker={"size": 4},
                line={"width": 2, "color": colour, "dash": dash},
                hovertemplate="%{y:.1f} min<extra>" + name + "</extra>",
            )
        )
    if target_ms:
        fig.add_hline(y=float(target_ms) / 60_000, line={"color": "#cf222e", "dash": "dash", "width": 1.5},
                      annotation_text=f"target {float(target_ms) / 60_000:g} min", annotation_position="top left",
                      annotation_font={"color": "#cf222e", "size": 11})
    return _layout(fig, title=f"{html(sla)}: latency per {bin_minutes} min (p50 / p95)", y_title="minutes", height=300)


def channel_flow_figure(df: pd.DataFrame, *, channel: str, bin_minutes: int = 5) -> go.Figure:
    """One channel's events per bin (bars) and errors + dead letters (red line, right axis)."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=df["bucket"], y=df["events"].astype(int).tolist(), name="events",
                         marker={"color": "#9ecbff"}, hovertemplate="%{y:,} events<extra></extra>"))
    fig.add_trace(go.Scatter(x=df["bucket"], y=df["errors"].astype(int).tolist(), name="errors", mode="lines",
                             line={"color": "#cf222e", "width": 2}, yaxis="y2",
                             hovertemplate="%{y:,} errors<extra></extra>"))
    fig = _layout(fig, title=f"{html(channel)}: throughput and errors per {bin_minutes} min", y_title="events",
                  height=300)
    fig.update_layout(yaxis2={"title": "errors", "overlaying": "y", "side": "right", "rangemode": "tozero",
                              "showgrid": False, "color": "#cf222e"}, bargap=0.1)
    return fig


def funnel_figure(df: pd.DataFrame, *, title: str) -> go.Figure:
    """Orders per stage (columns stage, orders) as a funnel with % of the first stage."""
    fig = go.Figure(
        go.Funnel(
            y=[str(s).replace("_", " ") for s in df["stage"]],
            x=df["orders"].astype(int).tolist(),
            textinfo="value+percent initial",
            marker={"color": ["#1f6feb", "#2f81f7", "#388bfd", "#4c9aff", "#58a6ff", "#79b8ff", "#9ecbff"][: len(df)]},
            connector={"fillcolor": "#eaeef2", "line": {"color": "#d0d7de", "width": 1}},
            hovertemplate="%{y}: %{x} orders (%{percentInitial:.0%} of received)<extra></extra>",
        )
    )
    fig = _layout(fig, title=html(title), y_title="", height=380)
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(rangemode="normal")
    fig.update_xaxes(tickformat="")
    return fig


def orphans_figure(df: pd.DataFrame) -> go.Figure:
    """Orphans per system, one bar segment per channel (columns system, channel, orphans)."""
    fig = go.Figure()
    channels = sorted(df["channel"].unique()) if not df.empty else []
    colours = _colours(channels)
    systems = sorted(df["system"].unique()) if not df.empty else []
    for channel in channels:
        group = df[df["channel"] == channel].set_index("system")["orphans"]
        fig.add_trace(go.Bar(
            x=[html(s) for s in systems], y=[int(group.get(s, 0)) for s in systems], name=html(channel),
            marker={"color": colours[channel]}, hovertemplate="%{x}: %{y:,} orphans<extra>" + html(channel) + "</extra>",
        ))
    fig = _layout(fig, title="Orphans per system and channel", y_title="orphans", height=300, barmode="stack")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(tickformat="", type="category")
    fig.update_yaxes(tickformat=",d", **({"dtick": 1} if df.empty or df.groupby("system")["orphans"].sum().max() <= 10 else {}))
    return fig


def exception_volume_figure(df: pd.DataFrame) -> go.Figure:
    """New exception occurrences per UTC day, one bar segment per channel (columns day, channel, occurrences)."""
    fig = go.Figure()
    channels = sorted(df["channel"].unique()) if not df.empty else []
    colours = _colours(channels)
    for channel in channels:
        group = df[df["channel"] == channel]
        fig.add_trace(go.Bar(
            x=[str(d) for d in group["day"]], y=group["occurrences"].astype(int).tolist(), name=html(channel),
            marker={"color": colours[channel]}, hovertemplate="%{x}: %{y:,} exceptions<extra>" + html(channel) + "</extra>",
        ))
    fig = _layout(fig, title="Manual-exception volume per channel and day", y_title="occurrences", height=300,
                  barmode="stack")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(tickformat="", type="category")
    return fig
