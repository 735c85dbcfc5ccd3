"""Plotly figures for the dashboard: pure functions of DataFrames (no database, no Streamlit)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

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
                name=str(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:,} events<extra>" + str(channel) + "</extra>",
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
                name=str(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:.2f}% (%{customdata[0]} of %{customdata[1]})<extra>" + str(channel) + "</extra>",
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
                name=str(channel),
                mode="lines",
                line={"width": 2, "color": colours[channel]},
                hovertemplate="%{y:.1f}% (%{customdata[0]} of %{customdata[1]})<extra>" + str(channel) + "</extra>",
            )
        )
    title = f"Within target — {sla}" if sla else "Within target — all SLAs"
    fig = _layout(fig, title=title, y_title="% within target")
    fig.update_yaxes(range=[0, 101], rangemode="normal")
    return fig


def freshness_figure(df: pd.DataFrame) -> go.Figure:
    """Heat map channel × location of the minutes since the last successful sync."""
    pivot = df.pivot_table(index="channel", columns="location", values="age_s", aggfunc="max") / 60
    text = pivot.map(lambda v: "" if pd.isna(v) else (f"{v:.0f} min" if v < 120 else f"{v / 60:.1f} h"))
    fig = go.Figure(
        go.Heatmap(
            z=pivot.round(1).values.tolist(),
            x=[str(c) for c in pivot.columns],
            y=[str(i) for i in pivot.index],
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
    ordered = events.sort_values("time")
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
                name=str(status),
                text=group["milestone"],
                textposition="top center",
                textfont={"size": 11},
                marker={"size": 13, "color": STATUS_COLOUR.get(str(status), "#6e7781"), "line": {"width": 1, "color": "white"},
                        "symbol": "x" if status in ("error", "dead_letter") else "circle"},
                customdata=group[["error"]].values.tolist(),
                hovertemplate="%{x|%H:%M:%S}<br>%{text}<br>" + str(status) + " %{customdata[0]}<extra>%{y}</extra>",
            )
        )
    fig = _layout(fig, title="Timeline by system", y_title="", height=max(280, 130 + 60 * len(systems)))
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(systems)), rangemode="normal")
    start, end = pd.Timestamp(ordered["time"].min()), pd.Timestamp(ordered["time"].max())
    pad = max((end - start) * 0.12, pd.Timedelta(seconds=30))
    fig.update_xaxes(range=[start - pad, end + pad])
    fig.update_layout(hovermode="closest")
    return fig
